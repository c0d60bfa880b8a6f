from agents.context import build_context, interface_of, python_interface

SOURCE = '''import os
LIMIT = 3
def parse(text: str, *, strict: bool = False) -> "Node":
    return Node(text)
class Node(Base):
    kind: str
    def __init__(self, text): self.text = text
    def render(self) -> str: return self.text
    def _cache(self): pass
def _private(): pass
'''


def test_python_interface_keeps_signatures_and_drops_bodies() -> None:
    iface = python_interface(SOURCE)
    assert 'def parse(text: str, *, strict: bool=False) -> \'Node\': ...' in iface
    assert "class Node(Base):" in iface and "    def render(self) -> str: ..." in iface
    assert "LIMIT = 3" in iface
    assert "_private" not in iface and "_cache" not in iface and "return" not in iface
    assert python_interface("def broken(:\n") == ""


def test_js_interface_lists_exports() -> None:
    js = "export function add(a, b) { return a + b }\nconst x = 1\nexport class Z {}\n"
    assert interface_of("m.ts", js).splitlines() == ["export function add(a, b)",
                                                     "export class Z"]


def test_context_carries_content_within_budget_else_interfaces() -> None:
    deps = [("b.py", "h2", SOURCE), ("a.py", "h1", "X = 1\n")]
    small = build_context(deps, budget=10_000)
    assert [d.path for d in small] == ["a.py", "b.py"] and small[1].content == SOURCE
    tight = build_context(deps, budget=100)
    assert tight[1].content is None and "def parse" in (tight[1].interface or "")
