"""JS/TS specifier scanning, resolution and tsconfig handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.analysis import analyze_path, analyze_sources
from agents.analysis.js_imports import package_name
from agents.analysis.js_scan import scan_specifiers
from agents.analysis.tsconfig import load_tsconfig, parse_jsonc

FIXTURES = Path(__file__).parent / "fixtures" / "analysis"


def specs(text: str) -> list[str]:
    return [spec for _kind, spec in scan_specifiers(text)]


@pytest.mark.parametrize(("source", "expected"), [
    ("import a from './a';", [("import", "./a")]),
    ("import * as ns from \"./a\"", [("import", "./a")]),
    ("import { a,\n  b as c } from './a'", [("import", "./a")]),
    ("import type { T } from './t'", [("import", "./t")]),
    ("import './side'", [("side-effect", "./side")]),
    ("export * from './a'", [("export", "./a")]),
    ("export { x as default } from './a'", [("export", "./a")]),
    ("export type { T } from './t'", [("export", "./t")]),
    ("const m = await import('./lazy')", [("dynamic", "./lazy")]),
    ("import('./x', { with: { type: 'json' } })", [("dynamic", "./x")]),
    ("const r = require('./r')", [("require", "./r")]),
    ("const r = require(`./tpl`)", [("require", "./tpl")]),
    ("import fs = require('fs')", [("require", "fs")]),
    ('/// <reference path="./globals.d.ts" />', [("reference", "./globals.d.ts")]),
])
def test_each_import_form(source, expected):
    assert scan_specifiers(source) == expected


@pytest.mark.parametrize("source", [
    "// import a from './a'",
    "/* require('./a') */",
    "/*\n import a from './a'\n*/",
    "const s = \"import a from './a'\"",
    "const s = 'require(\"./a\")'",
    "const t = `import a from './a'`",
    "const r = require(`./dir/${name}`)",
    "const r = require('./a' + suffix)",
    "const r = import(name)",
    "obj.require('./a'); myrequire('./a'); obj.import('./a')",
    "const re = /import a from '.\\/a'/g",
    "const re = /[/'\"]/; const s = 'x'",
    "console.log(import.meta.url)",
    "const x = Array.from('abc')",
])
def test_non_imports_are_ignored(source):
    assert specs(source) == []


def test_template_expressions_are_code():
    source = "const t = `a ${require('./in')} b ${ {k: `nested ${import('./deep')}`} } c`"
    assert specs(source) == ["./in", "./deep"]


def test_division_is_not_a_regex():
    source = "const r = a / 2; const s = b / c; import x from './after'"
    assert specs(source) == ["./after"]


def test_regex_after_keyword_and_operator():
    source = "function f(){ return /'/.test(s) }\nconst y = x.map(v => /\"/)\nimport a from './a'"
    assert specs(source) == ["./a"]


def test_jsx_text_with_apostrophe_does_not_swallow_imports():
    source = "const A = () => <p>Don't stop</p>;\nimport b from './b';"
    assert specs(source) == ["./b"]


def test_package_names():
    assert package_name("react-dom/client") == "react-dom"
    assert package_name("@scope/pkg/sub/path") == "@scope/pkg"
    assert package_name("node:fs/promises") == "fs"


@pytest.fixture(scope="module")
def jstree():
    return analyze_path(FIXTURES / "jstree")


def test_fixture_tree_edges_are_exact(jstree):
    assert set(jstree.edges) == {
        ("src/index.ts", "src/lib/a.ts"),  # extensionless
        ("src/index.ts", "src/types.d.ts"),  # .d.ts, type-only import
        ("src/index.ts", "src/side-effect.ts"),  # './side-effect.js' names the .ts source
        ("src/index.ts", "src/lib/index.ts"),  # directory index
        ("src/index.ts", "src/lib/b.tsx"),  # paths "@lib/*" and exact "@lib/special"
        ("src/index.ts", "src/lazy.mts"),  # import('./lazy.mjs')
        ("src/index.ts", "src/legacy.cts"),  # require('./legacy.cjs')
        ("src/index.ts", "src/config.ts"),  # "@config" and baseUrl 'src/config'
        ("src/lib/index.ts", "src/lib/a.ts"),
        ("src/lib/a.ts", "src/lib/b.tsx"),
        ("src/lib/b.tsx", "src/lib/a.ts"),  # './a.js' and require('./a') in a template
        ("web/app.mjs", "src/types.d.ts"),  # triple-slash reference
        ("web/app.mjs", "src/index.ts"),
        ("web/app.mjs", "src/lib/index.ts"),
        ("web/app.mjs", "src/config.ts"),  # the root tsconfig applies to web/
        ("packages/sub/main.ts", "packages/sub/util.ts"),  # its own nearest tsconfig
    }


def test_fixture_tree_externals_and_unresolved(jstree):
    assert jstree.external == {"src/index.ts": ["@scope/pkg", "fs", "react"],
                               "packages/sub/main.ts": ["@config"]}
    assert jstree.stats["unresolved_imports"] == 1  # './does-not-exist'
    assert "tsconfig.json" not in jstree.files


def test_fixture_tree_cycle(jstree):
    assert [list(c.witness) for c in jstree.cycles] == [
        ["src/lib/a.ts", "src/lib/b.tsx", "src/lib/a.ts"]]


def test_resolution_prefers_dependency_cruiser_extension_order():
    files = {"a.js": "", "a.ts": "", "b/index.ts": "", "b.d.ts": "", "main.ts":
             "import './a'; import './b'; import './a.js'"}
    assert set(analyze_sources(files).edges) == {
        ("main.ts", "a.js"), ("main.ts", "b.d.ts")}


def test_js_specifier_for_ts_source_only_when_js_is_missing():
    files = {"lib.ts": "", "dir/index.tsx": "", "m.mts": "", "main.mjs":
             "import './lib.js'; import './dir/index.jsx'; import './m.mjs'"}
    assert set(analyze_sources(files).edges) == {
        ("main.mjs", "lib.ts"), ("main.mjs", "dir/index.tsx"), ("main.mjs", "m.mts")}


def test_plan_files_of_other_types_resolve_exactly():
    files = {"app.ts": "import data from './data.json'; import './style.css'",
             "data.json": None}
    analysis = analyze_sources(files)
    assert analysis.edges == [("app.ts", "data.json")]
    assert analysis.stats["unresolved_imports"] == 1


def test_jsonc_parsing():
    text = '{\n // c\n "a": "http://x//y", /* b */ "l": [1, 2,],\n "s": "/*x*/",\n}'
    assert parse_jsonc(text) == {"a": "http://x//y", "l": [1, 2], "s": "/*x*/"}


def test_tsconfig_extends_chain_and_overrides():
    configs = {
        "tsconfig.json": '{"extends": ["./base/one.json", "@tsconfig/node20"],'
                         ' "compilerOptions": {"paths": {"x/*": ["lib/*"]}}}',
        "base/one.json": '{"extends": "./two", "compilerOptions": {"baseUrl": ".."}}',
        "base/two.json": '{"compilerOptions": {"baseUrl": "deep", "paths": {"y": ["z"]}}}',
    }
    config = load_tsconfig("tsconfig.json", configs.get)
    assert config.base_url == ""  # one.json overrides two.json, relative to base/
    assert config.paths == (("x/*", ("lib/*",)),)
    assert config.path_candidates("x/a/b") == ["lib/a/b"]


def test_paths_without_base_url_are_relative_to_their_config():
    files = {"pkg/tsconfig.json": '{"compilerOptions": {"paths": {"@/*": ["./src/*"]}}}',
             "pkg/src/util.ts": "", "pkg/src/main.ts": "import '@/util'"}
    assert analyze_sources(files).edges == [("pkg/src/main.ts", "pkg/src/util.ts")]


def test_longest_wildcard_prefix_wins():
    files = {"tsconfig.json": '{"compilerOptions": {"baseUrl": ".", "paths": '
                              '{"@/*": ["a/*"], "@/special/*": ["b/*"]}}}',
             "a/special/x.ts": "", "b/x.ts": "", "main.ts": "import '@/special/x'"}
    assert analyze_sources(files).edges == [("main.ts", "b/x.ts")]


def test_broken_tsconfig_is_an_error_not_a_crash():
    files = {"tsconfig.json": "{ nope", "a.ts": "import './b'; import 'react'", "b.ts": ""}
    analysis = analyze_sources(files)
    assert analysis.edges == [("a.ts", "b.ts")]
    assert analysis.errors[0]["file"] == "tsconfig.json"
