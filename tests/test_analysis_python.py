"""Python import forms, module discovery and grimp's resolution rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.analysis import analyze_path, analyze_sources

FIXTURES = Path(__file__).parent / "fixtures" / "analysis"


def edges_of(files: dict[str, str | None], **kwargs: object) -> set[tuple[str, str]]:
    return set(analyze_sources(files, **kwargs).edges)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pytree():
    return analyze_path(FIXTURES / "pytree", check_syntax=True)


def test_without_the_syntax_check_only_the_broken_file_differs(pytree):
    fast = analyze_path(FIXTURES / "pytree")
    assert set(fast.edges) - set(pytree.edges) == {("src/app/plugins/broken.py",
                                                    "src/app/core.py")}
    assert set(pytree.edges) <= set(fast.edges)
    assert fast.errors == [e for e in pytree.errors if "broken.py" not in e["file"]]
    assert fast.external == pytree.external
    assert fast.stats["unresolved_imports"] == pytree.stats["unresolved_imports"]


def test_fixture_tree_edges_are_exact(pytree):
    assert set(pytree.edges) == {
        # package __init__: `from . import core`, `from .sub import deep_name` (a name)
        ("src/app/__init__.py", "src/app/core.py"),
        ("src/app/__init__.py", "src/app/sub/__init__.py"),
        # absolute forms; `from app import missing_name` falls back to the package
        ("src/app/core.py", "src/app/__init__.py"),
        ("src/app/core.py", "src/app/util.py"),
        ("src/app/core.py", "src/app/sub/deep.py"),
        ("src/app/core.py", "src/helpers/__init__.py"),
        ("src/app/core.py", "src/app/plugins/typed_only.py"),  # if TYPE_CHECKING
        ("src/app/core.py", "src/app/plugins/lazy_one.py"),  # inside a function
        # relative imports, two levels up, and a star import
        ("src/app/util.py", "src/app/sub/deep.py"),
        ("src/app/util.py", "src/app/plugins/__init__.py"),
        ("src/app/sub/deep.py", "src/app/util.py"),
        ("src/app/sub/deep.py", "src/app/plugins/lazy_one.py"),
        # a second top-level package
        ("src/helpers/__init__.py", "src/app/sub/__init__.py"),
        # loose files see their siblings; `checks` is a namespace package at the root
        ("checks/helpers.py", "src/app/__init__.py"),
        ("checks/check_core.py", "checks/helpers.py"),  # shadows the src/helpers package
        ("checks/check_core.py", "src/app/core.py"),
    }
    # `import app.sub.nonexistent.deeper`: neither it nor its parent exist -> no edge
    assert pytree.stats["unresolved_imports"] == 1


def test_externals_by_top_level_name(pytree):
    assert pytree.external["src/app/core.py"] == [
        "__future__", "json", "os", "typing", "ujson", "yaml"]
    # a loose module of another directory is not importable from scripts/
    assert pytree.external["scripts/tool.py"] == ["check_core", "sys"]


def test_syntax_errors_and_bad_relative_imports_are_recorded_not_raised(pytree):
    messages = {e["file"]: e["message"] for e in pytree.errors}
    assert "SyntaxError" in messages["src/app/plugins/broken.py"]
    assert "beyond top-level package" in messages["src/app/sub/deep.py"]
    assert pytree.stats["parse_errors"] == 2
    assert "src/app/plugins/broken.py" in pytree.files


def test_skipped_directories(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(FIXTURES / "pytree", root)
    for skipped in ("build", "dist", "node_modules", ".venv", ".hidden", "src/app/__pycache__"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "extra.py").write_text("import app.core\n")
    assert analyze_path(root).files == analyze_path(FIXTURES / "pytree").files


@pytest.mark.parametrize(("source", "target"), [
    ("import pkg.sub.mod", "pkg/sub/mod.py"),  # to the module only, not its parents
    ("import pkg.sub.mod as alias", "pkg/sub/mod.py"),
    ("from pkg.sub import mod", "pkg/sub/mod.py"),  # a submodule
    ("from pkg.sub import name", "pkg/sub/__init__.py"),  # a name: the module holding it
    ("from pkg.sub.mod import name", "pkg/sub/mod.py"),
    ("import pkg.sub.missing", "pkg/sub/__init__.py"),  # parent exists
    ("import pkg.sub.missing.deeper", None),  # else nothing (grimp's default view)
    ("from pkg.missing.x import y", None),
    ("from pkg._native import y", None),  # a compiled extension is not in the tree
    ("from . import mod", "pkg/sub/mod.py"),
    ("from .. import other", "pkg/other.py"),
    ("from ..sub.mod import name", "pkg/sub/mod.py"),
    ("from .mod import *", "pkg/sub/mod.py"),
])
def test_grimp_resolution_rules(source, target):
    files = {"pkg/__init__.py": "", "pkg/other.py": "", "pkg/sub/__init__.py": "",
             "pkg/sub/mod.py": "", "pkg/sub/user.py": source}
    assert edges_of(files) == ({("pkg/sub/user.py", target)} if target else set())


def test_self_import_is_an_edge_like_grimp():
    files = {"pkg/__init__.py": "", "pkg/a.py": "from . import a\n"}
    analysis = analyze_sources(files)
    assert analysis.edges == [("pkg/a.py", "pkg/a.py")]
    assert [list(c.witness) for c in analysis.cycles] == [["pkg/a.py", "pkg/a.py"]]


def test_src_layout_and_several_top_level_packages():
    files = {
        "src/alpha/__init__.py": "from beta import thing\n",
        "src/beta/__init__.py": "",
        "backend/gamma/__init__.py": "import alpha\n",
        "setup.py": "import gamma, alpha\n",
    }
    assert edges_of(files) == {
        ("src/alpha/__init__.py", "src/beta/__init__.py"),
        ("backend/gamma/__init__.py", "src/alpha/__init__.py"),
        ("setup.py", "backend/gamma/__init__.py"),
        ("setup.py", "src/alpha/__init__.py"),
    }


def test_namespace_subpackage_inside_a_regular_package():
    # devline/cli has no __init__.py but devline does: devline.cli.x is importable.
    files = {"devline/__init__.py": "", "devline/errors.py": "",
             "devline/cli/analyze.py": "from ..errors import PlanError\n",
             "main.py": "from devline.cli.analyze import analyze\n"}
    assert edges_of(files) == {("devline/cli/analyze.py", "devline/errors.py"),
                               ("main.py", "devline/cli/analyze.py")}


def test_root_directory_that_is_itself_a_package():
    files = {"__init__.py": "from .core import x\n", "core.py": "import mypkg.util\n",
             "util.py": ""}
    assert edges_of(files, root_name="mypkg") == {
        ("__init__.py", "core.py"), ("core.py", "util.py")}


def test_stdlib_name_is_not_shadowed_by_a_namespace_directory():
    # A regular (stdlib) package wins over a directory without __init__.py (PEP 420).
    files = {"email/helpers.py": "", "app.py": "import email.mime\nimport email.helpers\n"}
    analysis = analyze_sources(files)
    assert analysis.edges == []
    assert analysis.external["app.py"] == ["email"]


def test_local_script_shadows_like_sys_path_zero():
    files = {"tools/json.py": "", "tools/run.py": "import json\n", "app.py": "import json\n"}
    analysis = analyze_sources(files)
    assert analysis.edges == [("tools/run.py", "tools/json.py")]
    assert analysis.external == {"app.py": ["json"]}


def test_loose_sibling_relative_import_is_lenient():
    files = {"a.py": "from . import b\n", "b.py": "", "c.py": "from .. import b\n"}
    analysis = analyze_sources(files)
    assert analysis.edges == [("a.py", "b.py")]
    assert [e["file"] for e in analysis.errors] == ["c.py"]


def test_imports_in_strings_and_comments_do_not_count():
    files = {"a.py": '"""import b"""\n# import b\nx = "from b import y"\n', "b.py": ""}
    assert edges_of(files) == set()


def test_python_2_and_garbage_files_do_not_crash():
    files = {"old.py": "print 'hello'\nimport new\n", "bin.py": "\x00\x01",
             "new.py": "import old\n"}
    analysis = analyze_sources(files)
    assert analysis.edges == [("new.py", "old.py")]
    assert sorted(e["file"] for e in analysis.errors) == ["bin.py", "old.py"]


def test_encoding_cookie_is_honoured(tmp_path):
    (tmp_path / "a.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\nimport b\n")
    (tmp_path / "b.py").write_bytes(b"")
    assert analyze_path(tmp_path).edges == [("a.py", "b.py")]


TRICKY = {
    "pkg/__init__.py": "",
    "pkg/a.py": '"""Docs.\n\n    >>> import pkg.fake\n    from pkg import fake2\n"""\n'
                "import pkg.b  # : import pkg.fake3\n"
                "x = 'a; import pkg.fake4'; import pkg.c\n"
                "try: import pkg.d\nexcept ImportError: from pkg import e\n"
                "from pkg import (  # a comment (with parentheses)\n    f,\n    g,\n)\n"
                "from pkg \\\n    import h\n"
                "s = r'\\' import pkg.fake5'\n"
                "t = f\"{'import pkg.fake6'}\"\n"
                "def gen():\n    yield (\n        from_x)\n    return (yield\n"
                "            from range(3))\n"
                "class K:\n    if True:\n        import pkg.i as eye\n",
    "pkg/b.py": "", "pkg/c.py": "", "pkg/d.py": "", "pkg/e.py": "", "pkg/f.py": "",
    "pkg/g.py": "", "pkg/h.py": "", "pkg/i.py": "",
    "pkg/fake.py": "", "pkg/fake2.py": "", "pkg/fake3.py": "", "pkg/fake4.py": "",
    "pkg/fake5.py": "", "pkg/fake6.py": "",
}


def test_imports_found_without_a_full_parse_are_the_parsed_ones(tmp_path):
    for path, text in TRICKY.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    fast, exact = analyze_path(tmp_path), analyze_path(tmp_path, check_syntax=True)
    assert fast.edges == exact.edges == [("pkg/a.py", f"pkg/{m}.py") for m in "bcdefghi"]
    assert fast.errors == exact.errors == []


def test_both_ways_agree_on_this_repository():
    root = Path(__file__).resolve().parents[1] / "agents"
    fast, exact = analyze_path(root), analyze_path(root, check_syntax=True)
    assert fast.edges == exact.edges and len(fast.edges) > 100
    assert fast.external == exact.external and fast.errors == exact.errors
