"""Find the module specifiers a JavaScript/TypeScript file imports, without a parser.

A tokenizer-level scanner: it skips comments, strings, template literals (with nested
`${...}`) and regular-expression literals, and reports only literal specifiers of

    import x from 'a'      import type { T } from 'a'      import 'a'
    export * from 'a'      export { x } from 'a'           import('a')
    require('a')           import x = require('a')          /// <reference path="a" />

Template literals count only without `${...}`; anything computed is ignored.
"""

from __future__ import annotations

import re

# Specifier kinds, for callers that care (all of them are dependencies).
IMPORT, EXPORT, SIDE_EFFECT, DYNAMIC, REQUIRE, REFERENCE = (
    "import", "export", "side-effect", "dynamic", "require", "reference")
Specifier = tuple[str, str]

# Every branch starts with a literal character, so `re` can skip ahead to the next
# candidate in C (a named group or a lookbehind first would disable that; 4x slower).
_MAIN = re.compile(r"""
    //[^\n]* | /\*[\s\S]*?(?:\*/|\Z)
  | '(?:[^'\\\n]|\\[\s\S])*(?:'|$) | "(?:[^"\\\n]|\\[\s\S])*(?:"|$)
  | ` | / | \{ | \}
  | import(?![\w$]) | export(?![\w$]) | require(?![\w$]) | from(?![\w$])
""", re.VERBOSE | re.MULTILINE)
_TPL_BODY = re.compile(r"(?:[^`\\$]|\\[\s\S]|\$(?!\{))*")
_REGEX = re.compile(r"/(?:[^/\\\[\n]|\\.|\[(?:[^\]\\\n]|\\.)*\])+/")
_LITERAL = r"""(?:'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)"|`([^`\\$]*)`)"""
_CALL = re.compile(r"\s*\(\s*" + _LITERAL + r"\s*([),])")
_STRING_NEXT = re.compile(r"""\s*(?:'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)")""")
_REFERENCE = re.compile(r"""///\s*<reference\s+path\s*=\s*(["'])([^"'\n]*)\1""")
_WORD_CHARS = re.compile(r"[\w$]+$")
# After these words a `/` starts a regular expression, not a division.
_REGEX_AFTER_WORD = frozenset({
    "return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw",
    "case", "do", "else", "yield", "await"})


def _literal(match: re.Match[str]) -> str:
    return next(group for group in match.groups()[:3] if group is not None)


def _regex_allowed(text: str, pos: int) -> bool:
    """Whether a `/` at `pos` starts a regex literal, judged by the lexeme before it."""
    i = pos - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    if i < 0:
        return True
    char = text[i]
    if char in ")]}'\"`":
        return False
    if char.isalnum() or char in "_$":
        word = _WORD_CHARS.search(text, max(0, i - 20), i + 1)
        return word is not None and word.group() in _REGEX_AFTER_WORD
    return True


def scan_specifiers(text: str) -> list[Specifier]:
    """The (kind, specifier) pairs of every literal import in `text`, in source order."""
    found: list[Specifier] = []
    if "import" not in text and "require" not in text and "export" not in text \
            and "<reference" not in text:
        return found
    stack: list[bool] = []  # True for a `${` of a template literal, False for a `{`
    pending: str | None = None  # an import/export statement waiting for its `from`
    pos, end = 0, len(text)
    while pos < end:
        match = _MAIN.search(text, pos)
        if match is None:
            break
        start, pos = match.start(), match.end()
        lexeme = match.group()
        first = lexeme[0]
        if first == "`" or (first == "}" and stack and stack.pop()):
            body = _TPL_BODY.match(text, pos)
            pos = body.end() if body else pos
            if text.startswith("${", pos):
                stack.append(True)
                pos += 2
            else:
                pos += 1  # the closing backtick (or the end of the text)
        elif first == "{":
            stack.append(False)
        elif lexeme == "/":
            if _regex_allowed(text, start):
                regex = _REGEX.match(text, start)
                pos = regex.end() if regex else pos
        elif lexeme.startswith("///"):
            ref = _REFERENCE.match(lexeme)
            if ref:
                found.append((REFERENCE, ref.group(2)))
        elif first.isalpha():
            if start and (text[start - 1] in "$." or text[start - 1].isalnum()
                          or text[start - 1] == "_"):
                continue  # part of a longer name, or a property: obj.require(...)
            pos, pending = _keyword(text, lexeme, pos, pending, found)
    return found


def _keyword(text: str, word: str, pos: int, pending: str | None,
             found: list[Specifier]) -> tuple[int, str | None]:
    """Handle one of the keywords; return where to go on and the pending statement."""
    if word == "require":
        call = _CALL.match(text, pos)
        if call and call.group(4) == ")":
            found.append((REQUIRE, _literal(call)))
            return call.end(), pending
        return pos, pending
    if word == "import":
        call = _CALL.match(text, pos)
        if call:
            found.append((DYNAMIC, _literal(call)))
            return call.end(), pending
        bare = _STRING_NEXT.match(text, pos)
        if bare:
            found.append((SIDE_EFFECT, bare.group(1) if bare.group(1) is not None
                          else bare.group(2)))
            return bare.end(), None
        if text.startswith(".", pos) or text[pos:pos + 1] == "(":
            return pos, pending  # import.meta, or import(expression)
        return pos, IMPORT
    if word == "export":
        return pos, EXPORT
    # word == "from"
    if pending is not None:
        spec = _STRING_NEXT.match(text, pos)
        if spec:
            found.append((pending, spec.group(1) if spec.group(1) is not None
                          else spec.group(2)))
            return spec.end(), None
    return pos, pending
