"""Content-addressed artifact store: file contents by sha256, written once, read by anyone.

Events and tables carry hashes; contents live here. `put` is idempotent (the same bytes
land at the same name), so storing an artifact is an effect that can be redone after any
crash. The local store is a directory shared by every devline process of one machine;
blocking file I/O runs in a thread, never in the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path
from typing import Protocol

from devline.errors import DevlineError


class ArtifactError(DevlineError):
    """The store could not be read or written (disk full, permissions); retried by callers."""

    retryable = True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore(Protocol):
    async def put(self, data: bytes) -> str:
        """Store `data`; return its sha256 (hex). Storing the same bytes twice is a no-op."""
        ...

    async def get(self, digest: str) -> bytes | None:
        """The bytes stored under `digest`, or None when the store does not have them."""
        ...


class LocalArtifactStore:
    """`root/sha256/ab/abcdef...`: one file per content, atomically renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ArtifactError(f"not a sha256 hex digest: {digest[:80]!r}")
        return self.root / "sha256" / digest[:2] / digest

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    async def get(self, digest: str) -> bytes | None:
        return await asyncio.to_thread(self.get_sync, digest)

    def put_sync(self, data: bytes) -> str:
        digest = sha256(data)
        target = self.path_for(digest)
        if target.exists():
            return digest
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{digest}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:
            raise ArtifactError(f"cannot store artifact {digest[:12]} under {self.root}: "
                                f"{exc.strerror or exc}") from exc
        return digest

    def get_sync(self, digest: str) -> bytes | None:
        try:
            data = self.path_for(digest).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {digest[:12]}: {exc.strerror}") from exc
        if sha256(data) != digest:  # a torn or tampered file is as good as missing
            return None
        return data
