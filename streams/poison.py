"""Records a stream cannot use go to the dead-letter topic with the reason; the stream goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from streams.emit import dead_letter_headers

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger("devline.poison")


async def guarded(pipeline: Pipeline, message: Any, handle: Callable[[Any], Awaitable[None]]
                  ) -> None:
    """Run `handle(message)`; a record that makes it fail is dead-lettered, the stream goes on."""
    try:
        await handle(message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("processing %s[%s]@%s failed", message.topic, message.partition,
                      message.offset)
        await dead_letter_message(pipeline, message,
                                  f"processing failed: {type(exc).__name__}: {exc}")


async def dead_letter_message(pipeline: Pipeline, message: Any, reason: str) -> None:
    """Send an undecodable record to the DLQ with the reason; the stream goes on."""
    log.warning("dead-lettering %s[%s]@%s: %s", message.topic, message.partition,
                message.offset, reason)
    await pipeline.emit.dead_letter(
        message.value, message.key,
        dead_letter_headers(reason, topic=message.topic, partition=message.partition,
                            offset=message.offset))
