"""Dependency-aware context: what a task is told about the files it depends on.

Whole files when they fit a budget, else their public interface (signatures, exports), so
the worker writes code against the real names without a prompt full of bodies.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from agents.types import DepContext

_JS_EXPORT = re.compile(r"^\s*export\s+(?:default\s+)?(?:async\s+)?"
                        r"(?:function\*?|class|const|let|var|interface|type|enum)\s+[^{=;]*",
                        re.MULTILINE)


def python_interface(source: str) -> str:
    """Top-level imports, signatures and class members of a module, bodies elided."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    lines: list[str] = []

    def sig(node: ast.FunctionDef | ast.AsyncFunctionDef, indent: str) -> None:
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        ret = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        lines.append(f"{indent}{prefix} {node.name}({ast.unparse(node.args)}){ret}: ...")

    for node in tree.body:
        public = not getattr(node, "name", "_").startswith("_")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and public:
            sig(node, "")
        elif isinstance(node, ast.ClassDef) and public:
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            lines.append(f"class {node.name}({bases}):" if bases else f"class {node.name}:")
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    not item.name.startswith("_") or item.name == "__init__"
                ):
                    sig(item, "    ")
                elif isinstance(item, ast.AnnAssign):
                    lines.append(f"    {ast.unparse(item)}")
        elif isinstance(node, ast.AnnAssign) or (isinstance(node, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id.isupper() for t in node.targets
        )):
            lines.append(ast.unparse(node))  # annotated names and CONSTANTS are interface
    return "\n".join(lines)


def interface_of(path: str, content: str) -> str:
    if path.endswith(".py"):
        return python_interface(content)
    if path.endswith((".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs")):
        return "\n".join(m.group(0).rstrip() for m in _JS_EXPORT.finditer(content))
    return ""


def build_context(deps: Iterable[tuple[str, str, str | None]], budget: int = 64 * 1024
                  ) -> tuple[DepContext, ...]:
    """(path, content_hash, content) of each dependency → context within `budget` bytes."""
    items = sorted(deps)
    total = sum(len(c or "") for _, _, c in items)
    out = []
    for path, digest, content in items:
        if content is None:
            out.append(DepContext(path, digest))
        elif total <= budget:
            out.append(DepContext(path, digest, content=content))
        else:
            out.append(DepContext(path, digest, interface=interface_of(path, content)))
    return tuple(out)
