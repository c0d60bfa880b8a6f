"""`devline analyze`: the dependency graph of a source tree or of a plan.

Wired into the main app with `app.command("analyze")(analyze)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from devline.errors import PlanError

if TYPE_CHECKING:  # the analyzer loads only when the command runs
    from agents.analysis import Analysis

# Long lines of paths: no syntax highlighting and no re-wrapping (a third of the summary's
# cost on Django), and they stay one greppable line.
PLAIN: dict[str, Any] = {"highlight": False, "soft_wrap": True}
EXIT_ERROR = 1
EXIT_CYCLES = 3


def load_plan(path: Path) -> Analysis:
    """Analyse a plan file: YAML or JSON with `files: [{path, content?, depends_on?, cost?}]`."""
    import yaml

    from agents.analysis import analyze_sources

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}") from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PlanError(f"plan {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") \
            from exc
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise PlanError(f"plan {path} has no `files` list", field="files")
    files: dict[str, str | None] = {}
    declared: dict[str, list[str]] = {}
    costs: dict[str, float] = {}
    for i, entry in enumerate(entries):
        item: dict[str, Any] = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise PlanError(f"files[{i}] needs a string `path`", field=f"files[{i}].path")
        name = item["path"]
        content = item.get("content")
        if content is not None and not isinstance(content, str):
            raise PlanError(f"files[{i}].content must be text", field=f"files[{i}].content")
        files[name] = content
        deps = item.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise PlanError(f"files[{i}].depends_on must be a list of paths",
                            field=f"files[{i}].depends_on")
        declared[name] = deps
        if item.get("cost") is not None:
            try:
                costs[name] = float(item["cost"])
            except (TypeError, ValueError) as exc:
                raise PlanError(f"files[{i}].cost must be a number",
                                field=f"files[{i}].cost") from exc
    return analyze_sources(files, root_name=str(path), costs=costs, declared=declared)


def render(analysis: Analysis, console: Console, top: int = 10) -> None:
    """Print a readable summary: counts, cycles, critical path, top priorities, errors."""
    from rich.table import Table

    stats = analysis.stats
    table = Table(title=f"Dependencies of {escape(analysis.root)}", show_header=False)
    for key in ("files", "python_files", "js_files", "edges", "externals", "cycles",
                "max_depth", "longest_path_cost", "unresolved_imports", "parse_errors",
                "seconds"):
        table.add_row(key.replace("_", " "), str(stats[key]))
    console.print(table)
    for cycle in analysis.cycles[:top]:
        console.print(f"[red]cycle[/red] ({len(cycle.members)} files): "
                      + escape(" -> ".join(cycle.witness)), **PLAIN)
    if len(analysis.cycles) > top:
        console.print(f"... and {len(analysis.cycles) - top} more cycles")
    if analysis.critical_path:
        console.print("[bold]critical path[/bold] (build order): "
                      + escape(" -> ".join(analysis.critical_path)), **PLAIN)
    sizes = ", ".join(str(len(level)) for level in analysis.levels[:20])
    console.print(f"levels: {len(analysis.levels)} (files per level: {sizes}"
                  f"{', ...' if len(analysis.levels) > 20 else ''})")
    ranked = sorted(analysis.priorities.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if ranked:
        ranking = Table(title=f"Top {len(ranked)} priorities (bottom level)")
        ranking.add_column("file")
        ranking.add_column("priority", justify="right")
        for name, value in ranked:
            ranking.add_row(escape(name), f"{value:g}")
        console.print(ranking)
    for error in analysis.errors[:top]:
        console.print(f"[yellow]skipped[/yellow] {escape(error['file'])}: "
                      f"{escape(error['message'])}")


def analyze(
    path: str = typer.Argument(..., help="A source directory, or a plan file (YAML/JSON)."),
    json_out: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
    fail_on_cycles: bool = typer.Option(
        False, "--fail-on-cycles", envvar="DEVLINE_FAIL_ON_CYCLES",
        help=f"Exit with status {EXIT_CYCLES} when the graph has a dependency cycle."),
    top: int = typer.Option(10, "--top", min=1, help="Rows to show in the summary."),
    check_syntax: bool = typer.Option(
        False, "--check-syntax", help="Parse every Python file of a directory whole and "
        "report those that do not parse (slower; without it, import statements are found "
        "without a full parse and a syntax error elsewhere goes unnoticed)."),
    jobs: int = typer.Option(
        0, "--jobs", "-j", min=0, envvar="DEVLINE_ANALYZE_JOBS",
        help="Processes scanning a directory of 512 KB of source or more "
        "(0: one per CPU, at most 4; 1: no extra process)."),
) -> None:
    """Analyse the import dependencies of a source tree or a plan.

    PATH is a directory, or a plan file (YAML/JSON) whose `files` list
    entries with `path` and optional `content`, `depends_on` and `cost`.
    Directories: Python and JS/TS files are scanned; node_modules, .git,
    .venv, dist, build and hidden directories are skipped.

    Prints a summary, or with --json the whole analysis: files, edges,
    externals, cycles, levels, critical path, priorities and stats.
    """
    from agents.analysis import analyze_path

    err = Console(stderr=True)
    target = Path(path)
    try:
        if target.is_dir():
            analysis = analyze_path(target, check_syntax=check_syntax,
                                    jobs=jobs or min(os.cpu_count() or 1, 4))
        elif target.is_file():
            analysis = load_plan(target)
        else:
            raise PlanError(f"no such file or directory: {path}")
    except (PlanError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from exc
    if json_out:
        typer.echo(json.dumps(analysis.to_json(), indent=2))
    else:
        render(analysis, Console(), top=top)
    if fail_on_cycles and analysis.cycles:
        raise typer.Exit(EXIT_CYCLES)
