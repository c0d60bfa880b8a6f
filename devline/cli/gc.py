"""`devline gc`: delete what the artifact store holds and nothing live needs (`streams.gc`)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

import typer

from devline.cli.common import err, out, run_async, settings_of
from devline.errors import ConfigError

if TYPE_CHECKING:  # streams.gc loads when the command runs, not for --help
    from streams.gc import Report

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    """'24h', '90m', '2d', '3600' (seconds) -> seconds."""
    found = _DURATION.fullmatch(text.lower())
    if not found:
        raise ConfigError(f"--grace: {text!r} is not a duration such as 24h, 90m, 2d or 3600")
    return float(found.group(1)) * _UNIT[found.group(2)]


def _size(n: int) -> str:
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in sorted(counts.items(), key=lambda x: -x[1]))


def summary(r: Report) -> list[str]:
    verb = "would delete" if r.dry_run else "deleted"
    lines = [
        f"live set: {sum(r.live.values()):,} digests from {r.records_read:,} changelog and "
        f"DLQ records ({_reasons(r.live) or 'none'})",
        f"refs: {r.refs:,} listed, {sum(r.refs_kept.values()):,} kept "
        f"({_reasons(r.refs_kept) or 'none'}), {verb} {r.refs_deleted:,}",
        f"objects: {r.objects:,} listed ({_size(r.object_bytes)}), "
        f"{sum(r.kept.values()):,} kept ({_size(r.kept_bytes)}: {_reasons(r.kept) or 'none'}), "
        f"{verb} {r.deleted:,} ({_size(r.deleted_bytes)})",
    ]
    if r.skipped:
        lines.append(f"{r.skipped:,} left alone: stored again (or gone) since they were listed")
    lines.append("took " + ", ".join(f"{k} {v:.2f}s" for k, v in r.seconds.items()))
    return lines


def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete "
                                          "nothing")] = False,
    grace: Annotated[str, typer.Option(help="Leave alone whatever was stored or renewed "
                                       "more recently than this (contents whose event is "
                                       "not folded yet): 24h, 90m, 2d; at least 2h")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Delete artifacts (contents, briefs, plan documents, cache refs) that no live table,
    dead letter or test-duration record needs. Reads the tables' changelogs and the DLQ to
    their end first, and refuses to delete anything if it cannot."""
    from streams.gc import MIN_GRACE_S, collect, collectable

    settings = settings_of(ctx)
    try:
        grace_s = seconds(grace)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if grace_s < MIN_GRACE_S:
        err.print(f"[red]error:[/red] --grace {grace} is under {MIN_GRACE_S / 3600:g}h: the "
                  "store renews an object stored again only once an hour, so a shorter "
                  "grace could delete contents a worker just stored")
        raise typer.Exit(2)
    report = run_async(collect(settings, collectable(settings), grace_s=grace_s,
                               dry_run=dry_run))
    if as_json:
        print(json.dumps(report.as_dict(), sort_keys=True), flush=True)
        return
    for line in summary(report):
        out.print(line)
