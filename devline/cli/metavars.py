"""Placeholders in `--help` that say what a value is (`--bootstrap HOST:PORT`, `--count N`,
`--timeout SECONDS`), not the Python type typer derives (`<str>`, `<int range>`).

Applied once to the whole command tree by `ConventionalGroup`, the root command's class,
so every command gets them, including those added later, and an option that names its
own metavar keeps it.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

# By option name: what the value is.
BY_NAME = {
    "bootstrap": "HOST:PORT", "registry_url": "URL", "topic_prefix": "PREFIX",
    "log_level": "LEVEL", "port": "PORT", "observe": "PORT", "observe_port": "PORT",
    "host": "HOST", "token": "TOKEN", "origin": "ORIGIN", "tls_cert": "FILE",
    "tls_key": "FILE", "config": "FILE", "worker_id": "ID", "tester_id": "ID",
    "since": "TIME", "until": "TIME", "event_type": "TYPE", "plan": "PLAN",
    "reason": "TEXT", "workspace": "DIR", "offset": "OFFSET", "key": "KEY",
}
# A float whose name has one of these is a time in seconds.
TIMES = ("timeout", "idle", "grace", "interval", "window", "after", "wait", "seconds")


def metavar(param: Any) -> str | None:
    """The placeholder for an option that has none; None to leave it (flags, choices,
    arguments, options that chose their own)."""
    if param.metavar is not None or param.param_type_name != "option" \
            or getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    name = str(param.name or "")
    kind = str(getattr(param.type, "name", ""))
    if kind == "choice":
        return None  # its values, e.g. <json|pretty|raw>
    if kind == "path" and name == "plan":
        return "FILE"
    if name in BY_NAME:
        return BY_NAME[name]
    if kind.startswith("int"):
        return "N"
    if kind.startswith("float"):
        return "SECONDS" if any(word in name for word in TIMES) else "NUMBER"
    if kind in ("path", "file", "directory"):
        return "PATH"
    if name == "grace":
        return "DURATION"
    return name.upper()


def usage(param: Any) -> str:
    """An argument in the usage line as POSIX tools write it: `PLAN`, `[PLAN]`, `PATH...`
    (typer writes `{plan}` for a required one)."""
    text = str(param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
    return text if param.required else f"[{text}]"


def apply(command: Any) -> None:
    """Give every option of `command` and its subcommands its placeholder, and every
    argument its usage."""
    for param in getattr(command, "params", []):
        found = metavar(param)
        if found is not None:
            param.metavar = found
        elif param.param_type_name == "argument":
            param.get_usage_pieces = lambda ctx, param=param: [usage(param)]
    for sub in (getattr(command, "commands", None) or {}).values():
        apply(sub)


class ConventionalGroup(TyperGroup):
    """The root command: its tree gets conventional placeholders once it is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        apply(self)
