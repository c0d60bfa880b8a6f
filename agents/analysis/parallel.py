"""Run scans side by side in forked processes: `devline analyze` of a big tree on 2+ cores.

The scanners are pure Python and hold the GIL, so threads would not help. A forked child
inherits the contents already read (no copy, no re-import), scans its share and sends its
`ScanResult` back pickled through a pipe. Anything that goes wrong in a child (no fork on
this platform, the child dies, a bad pickle) means its share is scanned in this process:
the result is the same, only slower.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence

from agents.analysis.model import ScanResult

Scan = Callable[[], ScanResult]

# Below this many bytes of source a fork costs more than it saves (a fork and a pickle
# are about 5 ms; scanning runs at 20-40 MB/s).
MIN_PARALLEL_BYTES = 512 * 1024
# Bytes of JS/TS cost about three times as much to scan as bytes of Python (Django: 23 vs
# 55 MB/s, with the copy-on-write a forked child pays for touching its share).
JS_WEIGHT = 3


def split(sizes: Mapping[str, int], parts: int, *, fixed: int = 0) -> list[list[str]]:
    """Share files among `parts` buckets of about equal total size, largest first.

    `fixed` is work already given to the last bucket (weighed in the same unit), so it
    gets fewer files. Each bucket's files keep the order of `sizes`."""
    loads = [0] * parts
    loads[-1] = fixed
    owner: dict[str, int] = {}
    for path in sorted(sizes, key=lambda p: (-sizes[p], p)):
        k = min(range(parts), key=lambda i: (loads[i], i))
        owner[path] = k
        loads[k] += sizes[path]
    buckets: list[list[str]] = [[] for _ in range(parts)]
    for path in sizes:
        buckets[owner[path]].append(path)
    return buckets


def run(scans: Sequence[Scan]) -> ScanResult:
    """Run `scans[0]` here and the others in forked children; merge all their results.

    Falls back to running everything here where forking is unsafe: no `os.fork`, or other
    threads running (a fork copies only the calling thread, and their locks)."""
    result = ScanResult()
    if len(scans) <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        for scan in scans:
            result.merge(scan())
        return result
    children = [_start(scan) for scan in scans[1:]]
    result.merge(scans[0]())
    for scan, child in zip(scans[1:], children, strict=True):
        found = _collect(child) if child is not None else None
        result.merge(found if found is not None else scan())
    return result


def _start(scan: Scan) -> tuple[int, int] | None:
    """Fork a child that runs `scan` and writes its pickled result; (pid, read end)."""
    try:
        read, write = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            os.close(read)
            data = pickle.dumps(scan(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _collect(child: tuple[int, int]) -> ScanResult | None:
    """The child's result, or None when it failed (the caller scans its share itself)."""
    pid, read = child
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        found = pickle.loads(data)  # noqa: S301 - our own child's bytes, through a pipe
    except Exception:  # a truncated pickle: scan here instead
        return None
    return found if isinstance(found, ScanResult) else None
