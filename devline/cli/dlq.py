"""`devline dlq`: list, show and redrive dead letters (logic in `streams.deadletters`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import err, out, run_async, settings_of

if TYPE_CHECKING:  # the Kafka side loads when a command runs, not for --help
    from rich.table import Table

    from devline.settings import Settings
    from streams.deadletters import Letter

dlq_app = typer.Typer(help="Inspect dead letters (devline.dlq) and redrive them.",
                      no_args_is_help=True, rich_markup_mode=None)

REASON_WIDTH = 60
HEX_LIMIT = 1024


# -- formatting --------------------------------------------------------------------------
def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def hexdump(data: bytes, limit: int = HEX_LIMIT) -> str:
    if not data:
        return "(empty)"
    lines = []
    for i in range(0, min(len(data), limit), 16):
        chunk = data[i:i + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:08x}  {chunk.hex(' '):<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)


def _short(text: str | None, width: int = REASON_WIDTH) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _origin(row: dict[str, Any], prefix: str) -> str:
    """Plan/task for a dead task; topic[partition]@offset for a poison record."""
    if row["task_id"]:
        return f"{row['plan_id']}/{row['task_id']}"
    topic = str(row["source_topic"] or "?")
    topic = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
    return f"{topic}[{row['source_partition']}]@{row['source_offset']}"


def _table(rows: list[dict[str, Any]], prefix: str) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1, 0, 0))
    table.add_column("offset", justify="right", no_wrap=True)
    table.add_column("age", no_wrap=True, min_width=3)
    table.add_column("plan/task or source", overflow="fold", min_width=14)
    table.add_column("att", justify="right", no_wrap=True)
    table.add_column("fprint", no_wrap=True)  # 8 hex digits tell failures apart; show has all
    table.add_column("redriven", no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=20, ratio=1)
    for r in rows:
        table.add_row(str(r["offset"]), age(r["age_s"]), escape(_origin(r, prefix)),
                      str(r["attempt"] or "-"), escape((r["fingerprint"] or "-")[:8]),
                      "[green]yes[/green]" if r["redriven"] else "-",
                      escape(_short(r["reason"])))
    return table


# -- commands ----------------------------------------------------------------------------
def _letters_and_marks(settings: Settings) -> tuple[list[Letter], dict[int, str]]:
    """Every dead letter, and which of them were redriven (both topics read at once)."""
    from schemas.codec import Codec
    from streams.deadletters import load_letters, redrive_marks

    codec = Codec.from_settings(settings)

    async def go() -> tuple[list[Letter], dict[int, str]]:
        return await asyncio.gather(load_letters(settings), redrive_marks(settings, codec))

    return run_async(go())


@dlq_app.command("list")
def list_letters(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one array)")] = False,
    limit: Annotated[int, typer.Option(help="Show the newest N letters (0: all)")] = 100,
) -> None:
    """List dead letters: source, plan/task, attempt, fingerprint, reason, redriven or not."""
    from streams import topics as T

    settings = settings_of(ctx)
    letters, marks = _letters_and_marks(settings)
    total = len(letters)
    if limit > 0:
        letters = letters[-limit:]
    now = int(time.time() * 1000)
    rows = [x.row(now, marks.get(x.offset)) for x in letters]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no dead letters in {settings.topic(T.DLQ)}")
        return
    out.print(_table(rows, settings.topic_prefix))
    if total > len(rows):
        out.print(f"showing the newest {len(rows)} of {total} (--limit 0 for all)")


@dlq_app.command("show")
def show(
    ctx: typer.Context,
    offset: Annotated[int, typer.Argument(help="Offset of the letter in devline.dlq",
                                                  metavar="OFFSET")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one dead letter: every header and the decoded payload (hex if undecodable).

    A big value travels by reference: the letter holds its head, the artifact store the
    full bytes, which are decoded when the store has them."""
    from rich.table import Table

    from devline.errors import DecodeError
    from schemas.codec import Codec
    from streams import topics as T

    settings = settings_of(ctx)
    letters, marks = _letters_and_marks(settings)
    letter = _found(letters, offset)
    view: dict[str, Any] = {**letter.row(int(time.time() * 1000), marks.get(offset)),
                            "headers": [[k, v.decode("utf-8", "replace")]
                                        for k, v in letter.headers]}
    raw = letter.value or b""
    if letter.ref("value") is not None:
        view["value_inline_bytes"] = len(raw)
        full, missing = run_async(_full_value(letter, settings))
        view.update(value_in_store=full is not None, value_missing=missing)
        raw = full if full is not None else raw
    try:
        view["type"], view["value"] = Codec.from_settings(settings).decode(raw)
    except DecodeError as exc:
        # The bytes the letter holds (the head of a value kept by reference).
        view.update(type=None, error=str(exc), raw_size=len(raw),
                    raw_hex=(letter.value or b"").hex())
    if as_json:
        print(json.dumps(view, indent=2, default=str))
        return
    out.print(f"[bold]dead letter {settings.topic(T.DLQ)}[{letter.partition}]@{offset}[/bold]"
              f"  key {escape(str(view['key']))}  age {age(view['age_s'])}")
    if view["redriven"]:
        out.print(f"[green]redriven:[/green] {escape(view['redriven'])}")
    table = Table("header", "value")
    for k, v in view["headers"]:
        table.add_row(escape(k), escape(v))
    out.print(table)
    if letter.ref("value") is not None:
        out.print(f"value by reference: sha256:{view['value_ref']}, {view['value_size']} bytes "
                  f"(first {view['value_inline_bytes']} in the letter); full bytes in the "
                  "artifact store: " + ("yes" if view["value_in_store"] else
                                        f"[red]no[/red] ({escape(view['value_missing'])})"),
                  soft_wrap=True)
    if letter.ref("key") is not None:
        out.print(f"key by reference: sha256:{letter.ref('key')}, {letter.size('key')} bytes "
                  f"(first {len(letter.key or b'')} in the letter)", soft_wrap=True)
    if view["type"]:
        out.print(f"payload: {view['type']}")
        out.print_json(json.dumps(view["value"], default=str))
    else:
        out.print(f"payload: undecodable ({escape(view['error'])}), {len(raw)} bytes")
        out.print(hexdump(raw), markup=False, highlight=False)


@dlq_app.command("redrive")
def redrive(
    ctx: typer.Context,
    offsets: Annotated[list[int] | None, typer.Argument(
        help="Offsets of the letters in devline.dlq", metavar="OFFSET",
        show_default=False)] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Every letter not yet redriven")
                           ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done")] = False,
) -> None:
    """Send letters back: a dead task gets a fresh attempt, a poison record its topic again.

    Letters already redriven and tasks no longer dead are reported and skipped (rerun-safe).
    A poison record kept by reference is republished whole from the artifact store, checked
    against its hash; without it the redrive is refused. Exits 1 if an offset is not in
    the DLQ or a redrive was refused.
    """
    from schemas.codec import Codec
    from streams import topics as T
    from streams.client import replay
    from streams.deadletters import (
        OriginalMissing,
        decide_all,
        execute,
        find,
        load_letters,
        originals,
        redrive_marks,
    )
    from streams.emit import now_ms

    if bool(offsets) == all_letters:
        err.print("[red]error:[/red] give OFFSET... or --all (not both)")
        raise typer.Exit(2)
    settings = settings_of(ctx)
    codec = Codec.from_settings(settings)

    async def go() -> tuple[int, list[int], int]:
        store = settings.artifact_store()  # a ConfigError here is printed by run_async
        letters, marks = await asyncio.gather(load_letters(settings),
                                              redrive_marks(settings, codec))
        chosen = letters if all_letters else [x for o in offsets or [] if (x := find(letters, o))]
        missing = [] if all_letters else [o for o in offsets or [] if find(letters, o) is None]
        plans = {str(x.plan_id) for x in chosen if x.is_task and x.offset not in marks}
        states = (await replay(settings, next(iter(plans)) if len(plans) == 1 else None)
                  if plans else {})
        decisions = decide_all(chosen, marks, states, now_ms())
        refused = 0
        for d in decisions:  # print as we go: a broker error midway still shows what was sent
            where = f"offset {d.letter.offset}"
            try:
                if d.action == "skip":
                    line = f"{where}: [yellow]skipped[/yellow] - {escape(d.detail)}"
                elif dry_run:
                    if d.action == "republish":  # refused now, as it would be then
                        await originals(d.letter, store)
                    line = f"{where}: would {escape(d.detail)} (dry run)"
                else:
                    done = await execute(settings, d, store)
                    line = f"{where}: [green]redriven[/green] - {escape(done)}"
            except OriginalMissing as exc:
                refused += 1
                line = (f"{where}: [red]refused[/red] - {escape(str(exc))}; nothing "
                        "republished (the truncated copy never is)")
            out.print(line, soft_wrap=True)
        return len(decisions), missing, refused

    count, missing, refused = run_async(go())
    for o in missing:
        err.print(f"[red]error:[/red] no dead letter at offset {o} in {settings.topic(T.DLQ)}")
    if all_letters and not count:
        out.print(f"no dead letters in {settings.topic(T.DLQ)}")
    if missing or refused:
        raise typer.Exit(1)


async def _full_value(letter: Letter, settings: Settings) -> tuple[bytes | None, str | None]:
    """The full value of a letter kept by reference, or None and why the store lacks it."""
    from streams.deadletters import OriginalMissing, original

    try:
        return await original(letter, "value", settings.artifact_store()) or b"", None
    except OriginalMissing as exc:
        return None, str(exc)


def _found(letters: Sequence[Letter], offset: int) -> Letter:
    from devline.errors import DevlineError
    from streams.deadletters import find

    try:
        letter = find(letters, offset)
    except DevlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if letter is None:
        err.print(f"[red]error:[/red] no dead letter at offset {offset}")
        raise typer.Exit(1)
    return letter
