#!/usr/bin/env python3
"""The live view's WebSocket hub under load: 200 subscribers on one 1,000-file plan.

`devline run --workers W --observe PORT` runs on a uuid topic prefix of the given broker.
Before the plan is submitted, this process opens N WebSocket clients (aiohttp) to
`/ws`, plus one *stalled* client (a raw socket with a tiny receive buffer that subscribes,
then never reads; it sends an unsolicited protocol pong every few seconds so that only
its not reading, not silence, can get it dropped) and one *dead* client (aiohttp,
autoping off: it subscribes, then never answers a ping or sends anything). Once the plan
is accepted (`/api/plans/<id>` answers), every client subscribes to `plan:<id>`.

Measured:
- delivery latency, event to client: a delta's `data.seq` is the offset of its event in
  `devline.events`; this process follows that topic and matches each frame with the
  record's Kafka timestamp (same machine clock); p50/p95/p99/max over every client and
  frame. This includes the benchmark's own event loop, which runs the N clients;
- delivery: frames per client, and whether each client got every delta from its
  snapshot's seq to the channel's last one with no gap and no resync;
- memory of the observe process (VmRSS of the `devline observe` child, from /proc) before
  any client, with the clients connected, then every 2 s while the stalled client stalls,
  beside the hub's counters from `/healthz` (queued frames, resyncs, drops);
- heartbeat: when and how the server closed the dead client (and the stalled one).

Prints one table and writes nothing else (the pipeline's log goes to a temp directory).

    .venv/bin/python scripts/bench_ws.py --clients 200 --files 1000 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import inspect
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import termios
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from bench_pipeline import BenchError, wait_until_ready

from agents.planning import plan_record
from devline.launch import running
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records
from streams.observe.ws import Hub
from streams.topics import create_topics, delete_prefixed_topics

SAMPLE_S = 2.0
PONG_EVERY_S = 3.0  # the stalled client's unsolicited pongs (keeps it clear of heartbeats)


def log(msg: str) -> None:
    print(f"[bench_ws] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def make_plan(n: int, run: str, seconds: float) -> dict[str, Any]:
    """N independent files, unique per run (no cache hits); QA and integration off."""
    files = []
    for i in range(n):
        f: dict[str, Any] = {"path": f"ws/m{i:05d}.py", "content": f"# {run}\nX = {i}\n"}
        if seconds > 0:
            f["simulate"] = {"duration_s": seconds}
        files.append(f)
    return {"project": f"ws-{run}", "name": "bench-ws",
            "options": {"qa": "off", "integration": "off"}, "files": files}


# -- the observe process ----------------------------------------------------------------
def observe_pid(session: int, port: int) -> int | None:
    """The `devline observe --port PORT` process in the runner's session, from /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) != session:  # field 6: session id
            continue
        if b"observe" in argv and str(port).encode() in argv:
            return int(entry.name)
    return None


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB, or (0, 0) once the process is gone."""
    found = {"VmRSS:": 0, "VmHWM:": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in found:
                found[parts[0]] = int(parts[1])
    return found["VmRSS:"], found["VmHWM:"]


async def healthz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    try:
        async with http.get(f"{base}/healthz") as r:
            return r.status, await r.json()
    except (aiohttp.ClientError, ValueError):
        return 0, {}


# -- clients ----------------------------------------------------------------------------
@dataclass
class Reader:
    """A well-behaved subscriber: reads everything, answers pings (aiohttp autoping)."""

    ws: aiohttp.ClientWebSocketResponse
    snapshot_seq: int | None = None
    frames: list[tuple[int, int, float]] = field(default_factory=list)  # (seq, offset, t)
    resyncs: int = 0
    errors: list[str] = field(default_factory=list)
    completed_at: float | None = None
    closed: str | None = None

    async def run(self, recording: asyncio.Event) -> None:
        async for msg in self.ws:
            t = time.time()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            if not recording.is_set():
                continue
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "event":
                data = frame["data"]
                self.frames.append((frame["seq"], data["seq"], t))
                if data.get("type") == "PlanCompleted":
                    self.completed_at = t
            elif kind == "snapshot":
                self.snapshot_seq = frame["seq"]
            elif kind == "resync_required":
                self.resyncs += 1
            elif kind == "error":
                self.errors.append(frame.get("message", "?"))
        self.closed = f"closed code {self.ws.close_code}"


@dataclass
class Dead:
    """Subscribes, then never sends anything again: no pong, no op (autoping off)."""

    ws: aiohttp.ClientWebSocketResponse
    last_sent: float = 0.0
    closed_after: float | None = None
    how: str = ""
    pings: int = 0

    async def run(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                self.pings += 1  # heard, never answered
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                self.closed_after = time.monotonic() - self.last_sent
                code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else self.ws.close_code
                self.how = f"{msg.type.name} code {code}"
                return


def _frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 5.2), FIN set; short payloads only."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


class Stalled:
    """A raw socket with a tiny receive buffer: upgrade, subscribe, never read again."""

    def __init__(self, host: str, port: int, rcvbuf: int) -> None:
        self.host, self.port, self.rcvbuf = host, port, rcvbuf
        self.sock: socket.socket | None = None
        self.stalled_at = 0.0
        self.reset_after: float | None = None
        self.resubscribed = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # before connect
        s.setblocking(False)
        await loop.sock_connect(s, (self.host, self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(s, (
            f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:  # nothing else comes before we subscribe
            chunk = await loop.sock_recv(s, 1)
            if not chunk:
                raise BenchError("stalled client: connection closed during the upgrade")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise BenchError(f"stalled client: upgrade refused: {head.splitlines()[0]!r}")
        self.sock = s

    async def subscribe(self, channel: str) -> None:
        assert self.sock is not None
        op = json.dumps({"op": "subscribe", "channel": channel}).encode()
        await asyncio.get_running_loop().sock_sendall(self.sock, _frame(0x1, op))
        self.stalled_at = time.monotonic()

    async def keep_talking(self) -> None:
        """Send an unsolicited pong now and then (allowed by RFC 6455 5.5.3), never read."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PONG_EVERY_S)
            try:
                await loop.sock_sendall(self.sock, _frame(0xA, b""))
            except OSError:
                self.reset_after = time.monotonic() - self.stalled_at
                return

    async def resubscribe(self, channel: str, times: int, every: float) -> None:
        """Ask for the channel again and again (a snapshot each time), never reading."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        op = _frame(0x1, json.dumps({"op": "subscribe", "channel": channel}).encode())
        for _ in range(times):
            await asyncio.sleep(every)
            try:
                await loop.sock_sendall(self.sock, op)
            except OSError:
                return
            self.resubscribed += 1

    def queues(self, server_port: int) -> tuple[int, int]:
        """(bytes waiting in the server's send queue for this client, in our receive
        queue): from /proc/net/tcp and FIONREAD, without reading anything."""
        if self.sock is None or self.sock.fileno() < 0:
            return 0, 0
        mine = self.sock.getsockname()[1]
        ours = 0
        with contextlib.suppress(OSError):
            ours = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD,
                                                  b"\0\0\0\0"))[0]
        theirs = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                f = line.split()
                if (int(f[1].split(":")[1], 16) == server_port
                        and int(f[2].split(":")[1], 16) == mine):
                    theirs = int(f[4].split(":")[0], 16)
        return theirs, ours

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


# -- the run ----------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss_kb: int
    ws: dict[str, int]
    stall_tx: int = 0  # bytes in the server's send queue to the stalled client
    stall_rx: int = 0  # bytes in the stalled client's receive queue


@dataclass
class Run:
    plan_id: str = ""
    offsets: dict[int, int] = field(default_factory=dict)  # event offset -> timestamp ms
    partitions: set[int] = field(default_factory=set)
    rss_idle: int = 0
    rss_connected: int = 0
    rss_hwm: int = 0
    samples: list[Sample] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list)
    dead: Dead | None = None
    stalled: Stalled | None = None
    stalled_dropped_after: float | None = None
    subscribe_s: float = 0.0
    plan_s: float = 0.0
    final_ws: dict[str, int] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


async def follow_events(settings: Settings, run: Run, done: asyncio.Event) -> None:
    """Map the plan's event offsets to their record timestamps."""
    codec = Codec.from_settings(settings)
    async for r in records(settings, T.EVENTS, follow=True):
        try:
            _, value = codec.decode(r.value or b"")
        except Exception:  # noqa: S112 - not ours to judge here
            continue
        if run.plan_id and value.get("plan_id") == run.plan_id:
            run.offsets[r.offset] = r.timestamp
            run.partitions.add(r.partition)
        if done.is_set():
            return


async def sampler(http: aiohttp.ClientSession, base: str, port: int, pid: int, run: Run,
                  began: float, stop: asyncio.Event) -> None:
    assert run.stalled is not None
    while not stop.is_set():
        _, body = await healthz(http, base)
        rss, hwm = rss_kb(pid)
        run.rss_hwm = max(run.rss_hwm, hwm)
        tx, rx = run.stalled.queues(port)
        run.samples.append(Sample(time.monotonic() - began, rss, dict(body.get("ws") or {}),
                                  tx, rx))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def bench(settings: Settings, args: argparse.Namespace, logfile: Path) -> Run:
    run = Run()
    host = "127.0.0.1"
    port = args.port or free_port()
    base = f"http://{host}:{port}"
    await create_topics(settings)
    cli = ["--workers", str(args.workers), "--observe", str(port), "--no-create-topics"]
    with running(settings, cli, logfile) as proc:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False)) as http:
            log(f"pipeline pid {proc.pid}, observe on {base}; waiting for workers")
            async with asyncio.timeout(180):
                await wait_until_ready(settings, args.workers, settle=2.0)
                while (await healthz(http, base))[0] != 200:  # noqa: ASYNC110 - polled
                    await asyncio.sleep(0.5)
            pid = None
            while pid is None:
                pid = observe_pid(proc.pid, port)
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)
            run.rss_idle = rss_kb(pid)[0]
            log(f"observe pid {pid}: {run.rss_idle / 1024:.1f} MB before clients")
            run.plan_id = uuid.uuid4().hex[:12]
            follower_done = asyncio.Event()
            follower = asyncio.create_task(follow_events(settings, run, follower_done))

            recording = asyncio.Event()
            sockets = await asyncio.gather(*(http.ws_connect(f"{base}/ws", autoping=True)
                                             for _ in range(args.clients)))
            run.readers = [Reader(ws) for ws in sockets]
            reading = [asyncio.create_task(r.run(recording)) for r in run.readers]
            run.dead = Dead(await http.ws_connect(f"{base}/ws", autoping=False))
            run.stalled = Stalled(host, port, args.rcvbuf)
            await run.stalled.connect()
            await asyncio.sleep(2.0)
            run.rss_connected = rss_kb(pid)[0]
            log(f"{args.clients} + 2 clients connected: {run.rss_connected / 1024:.1f} MB")

            plan = make_plan(args.files, run.plan_id[:6], args.file_seconds)
            plan["plan_id"] = run.plan_id
            record = plan_record(plan)
            channel = f"plan:{run.plan_id}"
            began = time.monotonic()
            await produce(settings, T.PLANS, "PlanSubmitted", record, key=run.plan_id)
            while True:  # the channel exists once the read side folded PlanAccepted
                async with http.get(f"{base}/api/plans/{run.plan_id}") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.02)
            recording.set()
            sub = json.dumps({"op": "subscribe", "channel": channel})
            t0 = time.monotonic()
            await asyncio.gather(*(r.ws.send_str(sub) for r in run.readers))
            run.subscribe_s = time.monotonic() - t0
            await run.dead.ws.send_str(sub)
            run.dead.last_sent = time.monotonic()
            dead_task = asyncio.create_task(run.dead.run())
            await run.stalled.subscribe(channel)
            pongs = asyncio.create_task(run.stalled.keep_talking())
            resubs = asyncio.create_task(run.stalled.resubscribe(
                channel, args.stall_resubscribe, args.resubscribe_every))
            log(f"plan {run.plan_id} accepted after {time.monotonic() - began:.1f}s; "
                f"{args.clients + 2} subscribed")

            stop_sampling = asyncio.Event()
            sampling = asyncio.create_task(sampler(http, base, port, pid, run, began,
                                                   stop_sampling))
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                if all(r.completed_at is not None or r.closed for r in run.readers):
                    break
                await asyncio.sleep(0.2)
            else:
                log("timed out before every client saw PlanCompleted")
            run.plan_s = time.monotonic() - began
            log(f"plan completed at every client {run.plan_s:.1f}s after submission; "
                "waiting for the stalled and dead clients to be dropped")
            linger_until = run.stalled.stalled_at + args.linger
            while time.monotonic() < linger_until:
                _, body = await healthz(http, base)
                ws = body.get("ws") or {}
                if ws.get("dropped_slow", 0) >= 1 and run.stalled_dropped_after is None:
                    run.stalled_dropped_after = time.monotonic() - run.stalled.stalled_at
                if dead_task.done() and run.stalled_dropped_after is not None:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(SAMPLE_S)
            stop_sampling.set()
            await sampling
            run.final_ws = dict((await healthz(http, base))[1].get("ws") or {})
            run.load = os.getloadavg()
            follower_done.set()
            for t in (pongs, resubs, dead_task, follower):
                t.cancel()
            await asyncio.gather(*(r.ws.close() for r in run.readers), return_exceptions=True)
            await asyncio.gather(pongs, resubs, dead_task, follower, *reading,
                                 return_exceptions=True)
            with contextlib.suppress(Exception):
                await run.dead.ws.close()
            run.stalled.close()
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the report -------------------------------------------------------------------------
def report(run: Run, args: argparse.Namespace) -> None:
    lat: list[float] = []
    unmatched = 0
    per_client: list[int] = []
    gapless = 0
    last_seq = max((r.frames[-1][0] for r in run.readers if r.frames), default=0)
    for r in run.readers:
        per_client.append(len(r.frames))
        seqs = [s for s, _, _ in r.frames]
        start = r.snapshot_seq if r.snapshot_seq is not None else -1
        if (r.resyncs == 0 and seqs == list(range(start + 1, start + 1 + len(seqs)))
                and seqs and seqs[-1] == last_seq):
            gapless += 1
        for _, offset, t in r.frames:
            ts = run.offsets.get(offset)
            if ts is None:
                unmatched += 1
            else:
                lat.append(t * 1000 - ts)
    snaps = [r.snapshot_seq for r in run.readers if r.snapshot_seq is not None]
    hub = inspect.signature(Hub.__init__).parameters
    hb, idle = hub["heartbeat_s"].default, hub["idle_timeout_s"].default
    qmax = hub["queue_max"].default
    d, st = run.dead, run.stalled
    assert d is not None and st is not None

    rows: list[tuple[str, str]] = [
        ("machine", f"{os.cpu_count()} cores, load avg {run.load[0]:.2f} / {run.load[1]:.2f}"
                    f" / {run.load[2]:.2f} (1/5/15 min, at the end)"),
        ("pipeline", f"devline run --workers {args.workers} --observe; plan of {args.files} "
                     f"files x {args.file_seconds:g}s, qa off, integration off"),
        ("plan", f"{run.plan_id}: submitted -> PlanCompleted at every client "
                 f"{run.plan_s:.1f}s; {len(run.offsets)} events on devline.events "
                 f"(partitions {sorted(run.partitions)})"),
        ("clients", f"{args.clients} readers + 1 stalled (SO_RCVBUF {args.rcvbuf}) + 1 dead;"
                    f" {args.clients} subscribes sent in {run.subscribe_s * 1000:.0f} ms"),
        ("deltas on plan channel", f"{last_seq} (snapshot seq at subscribe "
                                   f"{min(snaps, default=0)}..{max(snaps, default=0)})"),
        ("frames per reader", f"min {min(per_client, default=0)} / median "
                              f"{statistics.median(per_client) if per_client else 0:.0f} / "
                              f"max {max(per_client, default=0)}"),
        ("readers with every delta", f"{gapless} of {len(run.readers)} (gapless from snapshot"
                                     f" seq to {last_seq}, no resync); resyncs "
                                     f"{sum(r.resyncs for r in run.readers)}, errors "
                                     f"{sum(len(r.errors) for r in run.readers)}"),
        ("latency event->client (ms)",
         f"p50 {percentile(lat, 50):.0f} / p95 {percentile(lat, 95):.0f} / p99 "
         f"{percentile(lat, 99):.0f} / max {max(lat, default=float('nan')):.0f} over "
         f"{len(lat)} frames ({unmatched} unmatched)"),
        ("observe RSS before clients", f"{run.rss_idle / 1024:.1f} MB"),
        ("observe RSS, clients connected", f"{run.rss_connected / 1024:.1f} MB "
                                           f"(+{(run.rss_connected - run.rss_idle) / 1024:.1f}"
                                           f" MB for {args.clients + 2}, idle)"),
        ("observe RSS during run", _rss_range(run.samples) + f"; VmHWM {run.rss_hwm / 1024:.1f}"
                                                              " MB"),
        ("stalled client", _stalled(run, idle)),
        ("dead client", f"closed by the server {d.closed_after:.1f}s after its last frame "
                        f"({d.how}; {d.pings} protocol pings unanswered)"
                        if d.closed_after is not None else "NOT closed within the linger"),
        ("hub defaults", f"heartbeat_s {hb:g} (aiohttp ping, pong due in {hb / 2:g}s), "
                         f"idle_timeout_s {idle:g}, queue_max {qmax}; `devline observe` has"
                         " no flags for them"),
        ("hub stats at end", json.dumps(run.final_ws, separators=(",", ":"))),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\nWebSocket hub: {args.clients} subscribers on one {args.files}-file plan")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("\n  every 2 s (t from plan submission):")
    print(f"  {'t s':>6} {'RSS MB':>7} {'clients':>7} {'subs':>5} {'queued':>6} "
          f"{'resyncs':>7} {'drop_slow':>9} {'drop_idle':>9} {'stall txq KB':>12} "
          f"{'stall rxq KB':>12}")
    for s in run.samples:
        w = s.ws
        print(f"  {s.t:6.1f} {s.rss_kb / 1024:7.1f} {w.get('clients', '-'):>7} "
              f"{w.get('subscriptions', '-'):>5} {w.get('queued', '-'):>6} "
              f"{w.get('resyncs', '-'):>7} {w.get('dropped_slow', '-'):>9} "
              f"{w.get('dropped_idle', '-'):>9} {s.stall_tx / 1024:12.1f} "
              f"{s.stall_rx / 1024:12.1f}")


def _rss_range(samples: list[Sample]) -> str:
    rss = [s.rss_kb for s in samples if s.rss_kb]
    if not rss:
        return "no samples"
    return (f"{min(rss) / 1024:.1f}..{max(rss) / 1024:.1f} MB over {len(rss)} samples "
            f"(last {rss[-1] / 1024:.1f} MB)")


def _stalled(run: Run, idle: float) -> str:
    st = run.stalled
    assert st is not None
    resyncs = run.final_ws.get("resyncs", 0)
    peak_q = max((s.ws.get("queued", 0) for s in run.samples), default=0)
    drop = (f"dropped as slow {run.stalled_dropped_after:.1f}s after its subscribe"
            if run.stalled_dropped_after is not None else "not dropped within the linger")
    reset = (f", its socket reset at {st.reset_after:.1f}s" if st.reset_after is not None
             else "")
    peak_tx = max((s.stall_tx for s in run.samples), default=0)
    return (f"{drop} (idle_timeout_s {idle:g} of a blocked send){reset}; re-subscribed "
            f"{st.resubscribed}x; hub resyncs {resyncs}, peak queued {peak_q} frames, "
            f"peak server send queue to it {peak_tx / 1024:.0f} KB")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Needs a Kafka broker; topics get a uuid prefix and are deleted afterwards.")
    ap.add_argument("--clients", type=int, default=200, help="reading subscribers (200)")
    ap.add_argument("--files", type=int, default=1000, help="files in the plan (1000)")
    ap.add_argument("--file-seconds", type=float, default=0.0,
                    help="demo executor duration of each file (0)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    ap.add_argument("--port", type=int, default=0, help="observe port (default: a free one)")
    ap.add_argument("--rcvbuf", type=int, default=1024,
                    help="SO_RCVBUF of the stalled client, bytes (1024; the kernel rounds up)")
    ap.add_argument("--stall-resubscribe", type=int, default=0, metavar="N",
                    help="the stalled client also subscribes again N times (a full plan "
                         "snapshot each) so that more than the socket buffers' worth is owed "
                         "to it and the hub's queue bound is reached (0)")
    ap.add_argument("--resubscribe-every", type=float, default=0.05,
                    help="seconds between those subscribes (0.05)")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds for the plan to complete at every client (600)")
    ap.add_argument("--linger", type=float, default=120.0,
                    help="seconds after the subscribes to wait for the stalled and dead "
                         "clients to be dropped (120)")
    ap.add_argument("--bootstrap", default=os.environ.get("DEVLINE_BOOTSTRAP", "127.0.0.1:9092"),
                    help="Kafka bootstrap (env DEVLINE_BOOTSTRAP)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="devline-ws-"))
    settings = Settings(bootstrap=args.bootstrap, topic_prefix=f"ws{uuid.uuid4().hex[:8]}.",
                        work_partitions=12, event_partitions=4,
                        workspace=tmp / "out", data_dir=tmp / "data")
    try:
        run = asyncio.run(bench(settings, args, tmp / "run.log"))
    except (BenchError, TimeoutError) as exc:
        print(f"bench_ws failed: {exc!r} (log {tmp / 'run.log'})")
        return 1
    finally:
        asyncio.run(delete_prefixed_topics(settings))
    report(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
