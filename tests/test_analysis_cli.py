"""`devline analyze` mounted on a Typer app, as the main CLI does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from devline.cli.analyze import EXIT_CYCLES, analyze

FIXTURES = Path(__file__).parent / "fixtures" / "analysis"


@pytest.fixture
def run():
    app = typer.Typer()
    app.command("analyze")(analyze)

    @app.command("noop")
    def noop() -> None:  # a second command, so "analyze" stays a subcommand
        """Do nothing."""

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["analyze", *args])


def test_help_comes_from_the_docstring(run):
    result = run("--help")
    assert result.exit_code == 0
    assert "import dependencies" in result.output
    assert "--json" in result.output


def test_directory_json(run):
    result = run(str(FIXTURES / "jstree"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["stats"]["files"] == 12
    assert ["src/lib/a.ts", "src/lib/b.tsx"] in data["edges"]


def test_directory_summary(run):
    result = run(str(FIXTURES / "pytree"), "--check-syntax")
    assert result.exit_code == 0, result.output
    assert "critical path" in result.output
    assert "cycle" in result.output
    assert "broken.py" in result.output  # the syntax error is reported


def test_plan_file_yaml(run, tmp_path):
    plan = {"files": [
        {"path": "app/__init__.py", "content": ""},
        {"path": "app/models.py", "content": "import app.db\n", "cost": 3},
        {"path": "app/db.py"},
        {"path": "README.md", "depends_on": ["app/models.py"]},
    ]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    result = run(str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["edges"] == [["README.md", "app/models.py"], ["app/models.py", "app/db.py"]]
    assert data["critical_path"] == ["app/db.py", "app/models.py", "README.md"]
    assert data["priorities"]["app/db.py"] == 5.0


def test_plan_file_json_with_cycle(run, tmp_path):
    plan = {"files": [{"path": "a.ts", "content": "import './b'"},
                      {"path": "b.ts", "depends_on": ["a.ts"]}]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert run(str(path)).exit_code == 0
    result = run(str(path), "--fail-on-cycles")
    assert result.exit_code == EXIT_CYCLES
    assert "a.ts -> b.ts -> a.ts" in result.output


@pytest.mark.parametrize(("content", "message"), [
    ("files: [", "not valid"),
    ("name: no files here", "no `files` list"),
    ("files:\n  - {content: x}", "needs a string `path`"),
    ("files:\n  - {path: a.py, depends_on: [b.py]}", "not in the plan"),
    ("files:\n  - {path: /abs.py}", "absolute path"),
    ("files:\n  - {path: a.py, cost: lots}", "must be a number"),
])
def test_bad_plans_exit_non_zero_with_a_message(run, tmp_path, content, message):
    path = tmp_path / "plan.yaml"
    path.write_text(content)
    result = run(str(path))
    assert result.exit_code == 1
    assert message in result.output


def test_missing_path(run, tmp_path):
    result = run(str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "no such file or directory" in result.output


def test_paths_with_brackets_are_not_markup(run, tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "[id].tsx").write_text("import './[slug]'\n")
    (tmp_path / "pages" / "[slug].tsx").write_text("import './[id]'\n")
    result = run(str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "pages/[id].tsx -> pages/[slug].tsx -> pages/[id].tsx" in result.output
