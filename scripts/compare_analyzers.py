#!/usr/bin/env python3
"""Compare devline's dependency analyzer with grimp (Python) and dependency-cruiser (JS/TS).

For each package: files seen, our edges, theirs, agreement (|intersection| / |union| of
file -> file edges), examples of missing/extra edges, and each tool's wall time.

    .venv/bin/python scripts/compare_analyzers.py                  # defaults below
    .venv/bin/python scripts/compare_analyzers.py --python rich --js rxjs=rxjs/src
    .venv/bin/python scripts/compare_analyzers.py --synthetic 3000 --json out.json

JS/TS packages come from `--npm-dir`'s node_modules (install them there first, e.g.
`npm install --prefix .cache/npm dependency-cruiser@17 typescript@5 rxjs zod ...`);
each is copied under `.cache/compare/` so that no tool skips it for living in
node_modules. dependency-cruiser runs with `--no-config --ts-pre-compilation-deps`
(type-only imports count, as they do for us) and the tree's tsconfig.json, if any.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents.analysis import analyze_path  # noqa: E402
from agents.analysis.tree import JS_EXTS, SKIP_DIRS  # noqa: E402

PYTHON_DEFAULT = ["networkx", "rich", "pydantic", "hypothesis", "faust", "_pytest+pytest"]
JS_DEFAULT = ["rxjs=rxjs/src", "zod=zod/src", "immer=immer/src", "axios=axios/lib",
              "express=express/lib", "lodash-es=lodash-es", "effect=effect/src",
              "three=three/src", "three-jsm=three/examples/jsm",
              "react-query=@tanstack/react-query/src",
              "fixture=./tests/fixtures/analysis/jstree"]
Edge = tuple[str, str]


@dataclass
class Row:
    """One package compared against one other tool."""

    package: str
    tool: str
    files_ours: int
    files_theirs: int
    edges_ours: int
    edges_theirs: int
    agreement: float
    seconds_ours: float
    seconds_theirs: float
    missing: list[Edge] = field(default_factory=list)
    extra: list[Edge] = field(default_factory=list)
    note: str = ""


def _row(package: str, tool: str, files: tuple[int, int], ours: set[Edge],
         theirs: set[Edge], seconds: tuple[float, float], note: str = "") -> Row:
    union = ours | theirs
    agreement = len(ours & theirs) / len(union) if union else 1.0
    return Row(package, tool, files[0], files[1], len(ours), len(theirs), round(agreement, 4),
               round(seconds[0], 3), round(seconds[1], 3),
               sorted(theirs - ours)[:3], sorted(ours - theirs)[:3], note)


def _module_name(prefix: str, path: str) -> str:
    parts = [*filter(None, [prefix]), *path.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not an installed package")
    return Path(next(iter(spec.submodule_search_locations)))


def compare_grimp(spec: str, work: Path, root: Path | None = None) -> Row:
    """Our edges vs grimp's, on the modules grimp knows (it skips dirs without __init__).

    `spec` is one package, or several joined by `+` (`_pytest+pytest`): those are copied
    side by side into one tree, to exercise several top-level packages at once.
    """
    import grimp

    packages = spec.split("+")
    prefix = packages[0] if len(packages) == 1 else ""
    if root is None and len(packages) == 1:
        root = _package_dir(packages[0])
    elif root is None:
        root = work / spec
        shutil.rmtree(root, ignore_errors=True)
        for package in packages:
            shutil.copytree(_package_dir(package), root / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
    started = time.perf_counter()
    ours = analyze_path(root)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    graph = grimp.build_graph(*packages, cache_dir=None)
    theirs_s = time.perf_counter() - started
    modules = set(graph.modules)
    theirs = {(m, i) for m in modules for i in graph.find_modules_directly_imported_by(m)}
    names = {path: _module_name(prefix, path) for path in ours.files}
    unseen = sorted(p for p, name in names.items() if name not in modules)
    edges = {(names[a], names[b]) for a, b in ours.edges
             if names[a] in modules and names[b] in modules}
    note = f"{len(unseen)} files in dirs without __init__.py (grimp skips them)" if unseen else ""
    if ours.errors:
        note += f"; {len(ours.errors)} files we could not parse"
    return _row(spec, "grimp", (len(ours.files), len(modules)), edges, theirs,
                (ours_s, theirs_s), note.lstrip("; "))


def _depcruise(root: Path, npm_dir: Path) -> tuple[set[str], set[Edge], float]:
    binary = npm_dir / "node_modules" / ".bin" / "depcruise"
    if not binary.exists():
        raise SystemExit(f"dependency-cruiser not found at {binary}; npm install it there")
    cmd = [str(binary), "--no-config", "--ts-pre-compilation-deps", "--output-type", "json"]
    if (root / "tsconfig.json").exists():
        cmd += ["--ts-config", "tsconfig.json"]
    started = time.perf_counter()
    done = subprocess.run([*cmd, "."], cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout:
        raise SystemExit(f"depcruise failed on {root}: {done.stderr[-2000:]}")
    files: set[str] = set()
    edges: set[Edge] = set()
    for module in json.loads(done.stdout)["modules"]:
        source = module["source"]
        if not source.endswith(JS_EXTS) or not (root / source).is_file():
            continue  # unresolved names, core modules, externals
        files.add(source)
        for dep in module["dependencies"]:
            target = dep["resolved"]
            if target.endswith(JS_EXTS) and not dep["coreModule"] and (root / target).is_file():
                edges.add((source, target))
    return files, edges, seconds


def compare_depcruise(label: str, root: Path, npm_dir: Path) -> Row:
    """Our edges vs dependency-cruiser's, on the files both tools read."""
    started = time.perf_counter()
    ours = analyze_path(root)
    ours_s = time.perf_counter() - started
    files, theirs, theirs_s = _depcruise(root, npm_dir)
    common = files & {f for f in ours.files if f.endswith(JS_EXTS)}
    edges = {(a, b) for a, b in ours.edges if a in common and b in common}
    theirs = {(a, b) for a, b in theirs if a in common and b in common}
    skipped = len(files - common)
    note = f"{skipped} files only dependency-cruiser reads (dirs we skip)" if skipped else ""
    return _row(label, "dependency-cruiser", (len(ours.files), len(files)), edges, theirs,
                (ours_s, theirs_s), note)


def copy_js_package(spec: str, npm_dir: Path, work: Path) -> tuple[str, Path]:
    """`label=path/in/node_modules` -> a fresh copy under `work`; an existing directory
    (`label=./some/dir`, relative to the repository) is used where it is."""
    label, _, sub = spec.partition("=")
    if sub.startswith(("./", "/")) and (REPO / sub).is_dir():
        return label, REPO / sub
    source = npm_dir / "node_modules" / (sub or label)
    if not source.is_dir():
        raise SystemExit(f"{source} does not exist; npm install the package into {npm_dir}")
    target = work / label
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*SKIP_DIRS))
    return label, target


def synthesize_python(root: Path, count: int, seed: int = 7) -> None:
    """A src-layout package `synthapp` of `count` modules in 30 subpackages, ~100 lines each."""
    rng = random.Random(seed)
    body = "".join(f"def f{j}(x):\n    '''Step {j}.'''\n    y = x * {j}\n"
                   f"    return [y + k for k in range(10)]\n\n" for j in range(20))
    mods = [(f"pkg{i % 30}", f"mod{i}") for i in range(count)]
    base = root / "src" / "synthapp"
    for pkg in {p for p, _ in mods}:
        (base / pkg).mkdir(parents=True, exist_ok=True)
        (base / pkg / "__init__.py").write_text("")
    (base / "__init__.py").write_text("")
    forms = ["import synthapp.{p}.{m}", "from synthapp.{p} import {m}",
             "from synthapp.{p}.{m} import f1", "def lazy():\n    import synthapp.{p}.{m}\n"]
    for i, (pkg, mod) in enumerate(mods):
        deps = rng.sample(range(i), min(i, 4)) if i else []
        lines = ["import os", "from typing import TYPE_CHECKING"]
        lines += [rng.choice(forms).format(p=mods[j][0], m=mods[j][1]) for j in deps]
        (base / pkg / f"{mod}.py").write_text("\n".join(lines) + "\n\n" + body)


def synthesize_ts(root: Path, count: int, seed: int = 7) -> None:
    """A TypeScript tree of `count` modules in 30 folders, ~60 lines each."""
    rng = random.Random(seed)
    body = "".join(f"export function f{j}(x: number): number[] {{\n  // step {j}\n"
                   f"  const s = `value ${{x}} / {j}`;\n  return [x * {j}, s.length];\n}}\n"
                   for j in range(12))
    mods = [(f"dir{i % 30}", f"mod{i}") for i in range(count)]
    for i, (folder, mod) in enumerate(mods):
        deps = rng.sample(range(i), min(i, 4)) if i else []
        lines = ["import { readFileSync } from 'node:fs';"]
        for j in deps:
            spec = f"../{mods[j][0]}/{mods[j][1]}"
            lines.append(rng.choice([f"import {{ f1 as a{j} }} from '{spec}';",
                                     f"export {{ f2 as b{j} }} from '{spec}.js';",
                                     f"const c{j} = require('{spec}');",
                                     f"const d{j} = import('{spec}.js');"]))
        path = root / "src" / folder / f"{mod}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n" + body)


def synthetic_rows(count: int, work: Path, npm_dir: Path) -> list[Row]:
    root = work / f"synthetic-{count}"
    shutil.rmtree(root, ignore_errors=True)
    synthesize_python(root / "py", count)
    synthesize_ts(root / "ts", count)
    sys.path.insert(0, str(root / "py" / "src"))
    rows = [compare_grimp("synthapp", work, root / "py" / "src" / "synthapp")]
    rows[0].package = f"synthetic-py-{count}"
    if (npm_dir / "node_modules" / ".bin" / "depcruise").exists():
        rows.append(compare_depcruise(f"synthetic-ts-{count}", root / "ts", npm_dir))
    return rows


def print_rows(rows: list[Row]) -> None:
    header = (f"{'package':<26}{'vs':<20}{'files':>12}{'ours':>8}{'theirs':>8}"
              f"{'agree':>8}{'t ours':>9}{'t theirs':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row.package:<26}{row.tool:<20}{f'{row.files_ours}/{row.files_theirs}':>12}"
              f"{row.edges_ours:>8}{row.edges_theirs:>8}{row.agreement:>8.4f}"
              f"{row.seconds_ours:>8.2f}s{row.seconds_theirs:>9.2f}s")
        for name, edges in (("missing", row.missing), ("extra", row.extra)):
            for a, b in edges:
                print(f"    {name}: {a} -> {b}")
        if row.note:
            print(f"    note: {row.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", nargs="*", default=PYTHON_DEFAULT,
                        help="installed Python packages to compare with grimp (a+b: together)")
    parser.add_argument("--js", nargs="*", default=JS_DEFAULT,
                        help="label=path inside node_modules, compared with dependency-cruiser")
    parser.add_argument("--npm-dir", type=Path, default=REPO / ".cache" / "npm")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "compare")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[3000],
                        help="sizes of generated Python and TypeScript trees to time")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    rows = [compare_grimp(package, args.work_dir) for package in args.python]
    for spec in args.js:
        label, root = copy_js_package(spec, args.npm_dir, args.work_dir)
        rows.append(compare_depcruise(label, root, args.npm_dir))
    for count in args.synthetic:
        rows.extend(synthetic_rows(count, args.work_dir, args.npm_dir))
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
