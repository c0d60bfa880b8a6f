"""The parts of `tsconfig.json` that steer module resolution: `baseUrl` and `paths`.

tsconfig files are JSON with comments and trailing commas; `extends` is followed for
relative paths (a string or, since TypeScript 5, a list), children overriding parents.
Package-name `extends` (`@tsconfig/node20`) live in node_modules and are not followed.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_COMMENTS = re.compile(r'("(?:[^"\\\n]|\\.)*")|//[^\n]*|/\*[\s\S]*?\*/')
_TRAILING_COMMA = re.compile(r'("(?:[^"\\\n]|\\.)*")|,(\s*[}\]])')
CONFIG_NAMES = ("tsconfig.json", "jsconfig.json")
Reader = Callable[[str], str | None]


class TsConfigError(ValueError):
    """A tsconfig that cannot be parsed."""


def parse_jsonc(text: str) -> Any:
    """Parse JSON that may hold `//` and `/* */` comments and trailing commas."""
    text = _COMMENTS.sub(lambda m: m.group(1) or "", text)
    text = _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TsConfigError(str(exc)) from exc


def _join(directory: str, relative: str) -> str:
    joined = posixpath.normpath(posixpath.join(directory, relative))
    return "" if joined == "." else joined


@dataclass(frozen=True)
class TsConfig:
    """Resolution settings, with directories relative to the analysed tree's root."""

    path: str
    base_url: str | None = None
    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    paths_base: str = ""

    def path_candidates(self, specifier: str) -> list[str]:
        """Tree paths a bare specifier may map to through `paths`, best pattern first.

        TypeScript prefers an exact pattern, then the wildcard pattern with the longest
        prefix; within a pattern, substitutions are tried in order.
        """
        best: tuple[int, tuple[str, ...], str] | None = None
        for pattern, targets in self.paths:
            if "*" not in pattern:
                if pattern == specifier:
                    return [_join(self.paths_base, t) for t in targets]
                continue
            prefix, _, suffix = pattern.partition("*")
            if (specifier.startswith(prefix) and specifier.endswith(suffix)
                    and len(specifier) >= len(prefix) + len(suffix)
                    and (best is None or len(prefix) > best[0])):
                star = specifier[len(prefix): len(specifier) - len(suffix)]
                best = (len(prefix), targets, star)
        if best is None:
            return []
        _, targets, star = best
        return [_join(self.paths_base, t.replace("*", star, 1)) for t in targets]


def _load_options(path: str, read: Reader, seen: frozenset[str]) -> dict[str, Any]:
    """Compiler options of `path` merged over its `extends`, dirs made root-relative."""
    text = read(path)
    if text is None or path in seen:
        return {}
    data = parse_jsonc(text)
    if not isinstance(data, dict):
        raise TsConfigError(f"{path}: not a JSON object")
    directory = posixpath.dirname(path)
    options: dict[str, Any] = {}
    parents = data.get("extends") or []
    for parent in [parents] if isinstance(parents, str) else parents:
        if isinstance(parent, str) and parent.startswith("."):
            target = _join(directory, parent)
            if not target.endswith(".json") and read(target) is None:
                target += ".json"
            options.update(_load_options(target, read, seen | {path}))
    own = data.get("compilerOptions") or {}
    if isinstance(own.get("baseUrl"), str):
        options["baseUrl"] = _join(directory, own["baseUrl"])
    if isinstance(own.get("paths"), dict):
        options["paths"] = own["paths"]
        options["pathsDir"] = directory
    return options


def load_tsconfig(path: str, read: Reader) -> TsConfig:
    """Load the tsconfig at tree path `path`, reading files through `read`."""
    options = _load_options(path, read, frozenset())
    base_url = options.get("baseUrl")
    raw_paths: Mapping[str, Any] = options.get("paths") or {}
    paths = tuple(
        (str(pattern), tuple(str(t) for t in targets))
        for pattern, targets in raw_paths.items() if isinstance(targets, list))
    paths_base = base_url if base_url is not None else options.get("pathsDir", "")
    return TsConfig(path, base_url, paths, paths_base)
