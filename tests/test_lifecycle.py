"""Kafka clients are stopped however their start, use or stop ends; no command leaves an
unclosed client behind when the broker is down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devline.errors import BrokerUnavailable
from streams.lifecycle import running, shut

ROOT = Path(__file__).resolve().parents[1]


class Client:
    def __init__(self, fail_start: bool = False, fail_stop: bool = False,
                 closes: bool = False) -> None:
        self.fail_start, self.fail_stop = fail_start, fail_stop
        self.calls: list[str] = []
        if closes:  # an admin client closes instead of stopping
            self.close = self._end
        else:
            self.stop = self._end

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("connection refused")

    async def _end(self) -> None:
        self.calls.append("end")
        if self.fail_stop:
            raise RuntimeError("stop failed")


def test_a_client_is_stopped_after_the_body_and_after_a_failed_start() -> None:
    async def scenario() -> None:
        ok = Client()
        async with running(ok) as client:
            assert client is ok and ok.calls == ["start"]
        assert ok.calls == ["start", "end"]

        broken = Client(fail_start=True)
        with pytest.raises(OSError):
            async with running(broken):
                raise AssertionError("the body must not run")
        assert broken.calls == ["start", "end"]

        translated = Client(fail_start=True, closes=True)
        with pytest.raises(BrokerUnavailable, match="no broker") as info:
            async with running(translated, failed=lambda e: BrokerUnavailable("no broker")):
                pass
        assert translated.calls == ["start", "end"]
        assert isinstance(info.value.__cause__, OSError)

        body_fails = Client(fail_stop=True)
        with pytest.raises(ValueError):  # the body's error, not the stop's
            async with running(body_fails):
                raise ValueError("body")
        assert body_fails.calls == ["start", "end"]
        await shut(object())  # nothing to stop: nothing happens

    asyncio.run(scenario())


@pytest.mark.parametrize("command", [["gc", "--dry-run"], ["topics", "describe"],
                                     ["reset", "--to-earliest", "--dry-run"]])
def test_commands_leave_no_unclosed_client_when_no_broker_answers(command: list[str]) -> None:
    env = {**os.environ, "DEVLINE_BOOTSTRAP": "127.0.0.1:1", "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "devline", *command], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: no Kafka broker at 127.0.0.1:1 (connection refused). Is a broker running? "
        "(scripts/kafka-local start, or set DEVLINE_BOOTSTRAP)"], done.stderr


def test_a_stop_that_raises_its_own_cancellation_is_a_stop_ours_is_passed_on() -> None:
    class Fetching:
        """aiokafka's consumer with the broker gone: stop() re-raises its cancelled fetch."""

        stopped = False

        async def stop(self) -> None:
            fetch = asyncio.ensure_future(asyncio.sleep(10))
            fetch.cancel()
            self.stopped = True
            await fetch

    class Slow:
        async def stop(self) -> None:
            await asyncio.sleep(10)

    async def scenario() -> None:
        client = Fetching()
        await shut(client)  # returns: the client is stopped
        assert client.stopped
        ours = asyncio.ensure_future(shut(Slow()))
        await asyncio.sleep(0.05)
        ours.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ours

    asyncio.run(scenario())


def test_a_stop_that_never_ends_is_given_up_and_the_connections_closed() -> None:
    class Connections:
        closed = False

        async def close(self) -> None:
            self.closed = True

    class Stuck:
        """aiokafka's consumer with the broker gone: stop() looks for the coordinator."""

        def __init__(self) -> None:
            self._client = Connections()

        async def stop(self) -> None:
            await asyncio.sleep(3600)

    async def scenario() -> float:
        stuck = Stuck()
        began = asyncio.get_running_loop().time()
        await shut(stuck, within=0.1)
        assert stuck._client.closed
        return asyncio.get_running_loop().time() - began

    assert asyncio.run(scenario()) < 1.0


def run_failing(process: str, failing: str, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> dict[str, Client]:
    """Run a worker or tester whose `failing` client fails to start; the clients it made."""
    from devline.settings import Settings
    from streams import tester, worker

    module = worker if process == "worker" else tester
    made: dict[str, Client] = {}

    def client(kind: str) -> object:
        def make(*args: object, **kwargs: object) -> Client:
            made[kind] = Client(fail_start=kind == failing)
            return made[kind]
        return make

    monkeypatch.setattr(module, "AIOKafkaProducer", client("producer"))
    monkeypatch.setattr(module, "AIOKafkaConsumer", client("consumer"))
    settings = Settings(bootstrap="127.0.0.1:1", data_dir=tmp_path / "data",
                        workspace=tmp_path / "ws")
    proc = worker.Worker(settings) if process == "worker" else tester.TestWorker(settings)
    with pytest.raises(OSError, match="connection refused"):
        asyncio.run(proc.run())
    return made


@pytest.mark.parametrize("process", ["worker", "tester"])
def test_a_worker_or_tester_whose_consumer_fails_to_start_stops_its_producer(
        process: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made = run_failing(process, "consumer", monkeypatch, tmp_path)
    assert made["producer"].calls == ["start", "end"]  # started, then stopped
    assert made["consumer"].calls == ["start", "end"]


@pytest.mark.parametrize("process", ["worker", "tester"])
def test_a_worker_or_tester_whose_producer_fails_to_start_makes_no_consumer(
        process: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made = run_failing(process, "producer", monkeypatch, tmp_path)
    assert made["producer"].calls == ["start", "end"]
    assert "consumer" not in made  # none made, so none left unclosed
