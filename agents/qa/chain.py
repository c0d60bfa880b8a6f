"""Run a file's checker chain in a throwaway sandbox and decide what blocks.

Only problems the file introduces block (the SWE-agent rule): given the previous version,
a fatal finding blocks only when its line-agnostic key is not among the previous version's
findings of the same check. The previous version is checked lazily, per check, and only
when the current version has a fatal finding there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agents.executors.sandbox import new_sandbox, remove_sandbox, write_output
from agents.qa.checkers import CHECKERS, CheckContext, Checker, Outcome
from agents.qa.config import QAConfig
from agents.qa.model import CheckResult, CheckStatus, Finding, Verdict, bound_output
from agents.qa.tools import ToolLocator

EARLIER_FAILED = "earlier check failed"


@contextmanager
def _sandbox(files: Mapping[str, str]) -> Iterator[tuple[Path, Path]]:
    """(work, scratch): the files written under `work`; `scratch` for tool reports."""
    root = new_sandbox("qa")
    try:
        work, scratch = root / "work", root / "qa"
        work.mkdir()
        scratch.mkdir()
        for relpath, content in files.items():
            write_output(work, relpath, content)  # WorkspaceError if it escapes `work`
        yield work, scratch
    finally:
        remove_sandbox(root)


@dataclass
class _Previous:
    """The previous version's sandbox, made on first need; its findings per check."""

    files: Mapping[str, str] | None
    stack: ExitStack
    dirs: tuple[Path, Path] | None = None
    findings: dict[str, tuple[Finding, ...]] = field(default_factory=dict)

    def sandbox(self) -> tuple[Path, Path]:
        if self.dirs is None:
            assert self.files is not None
            self.dirs = self.stack.enter_context(_sandbox(self.files))
        return self.dirs


async def check_file(path: str, files: Mapping[str, str], *, chain: str = "default",
                     previous: str | None = None, config: QAConfig | None = None,
                     timeout_s: float = 60.0, tool_paths: Sequence[Path] = (),
                     locator: ToolLocator | None = None) -> Verdict:
    """Check `files[path]` with chain `chain`; `files` also holds what it imports.

    `previous` is the file's prior content (None: new file, every fatal finding blocks).
    `timeout_s` limits each check unless the config sets the checker's own `timeout_s`.
    Tools are found in `tool_paths`, the venv, the bootstrap node cache, then PATH;
    `locator` replaces that search (tests force a missing tool with it).
    Raises ConfigError for an unknown chain, WorkspaceError for a path that escapes the
    sandbox, ValueError when `path` is not among `files`.
    """
    started = time.monotonic()
    if path not in files:
        raise ValueError(f"{path!r} is not among the files to check")
    config = config or QAConfig.builtin()
    names = config.chain(chain, path)
    tools = locator or ToolLocator.default(tool_paths)
    results: list[CheckResult] = []
    if names:
        prior_files = None if previous is None else {**files, path: previous}
        with ExitStack() as stack, _sandbox(files) as (work, scratch):
            prior = _Previous(prior_files, stack)
            stopped = False
            for name in names:
                if stopped:
                    results.append(_skipped(name, EARLIER_FAILED))
                    continue
                checker = CHECKERS[name]
                ctx = CheckContext(work, scratch, path, files[path], config.options_for(name),
                                   timeout_s, tools)
                result = await _run_check(checker, ctx, prior)
                results.append(result)
                stopped = checker.gate and result.blocking
    return Verdict(path, chain, tuple(results), _ms_since(started))


async def _run_check(checker: Checker, ctx: CheckContext, prior: _Previous) -> CheckResult:
    started = time.monotonic()
    outcome = await checker.run(ctx)
    candidates = tuple(f for f in outcome.findings if f.fatal)
    if candidates and prior.files is not None:
        before = await _previous_findings(checker, ctx, prior)
        introduced = _introduced(candidates, before)
    else:
        introduced = candidates
    match outcome.status:
        case CheckStatus.ERROR:
            blocking = True  # unverifiable: a timeout or a broken tool run
        case CheckStatus.FAIL:
            blocking = bool(introduced) or not candidates
        case CheckStatus.PASS | CheckStatus.SKIPPED:
            blocking, introduced = False, ()
    return CheckResult(checker.name, outcome.status, blocking, outcome.command,
                       _ms_since(started), bound_output(outcome.output), outcome.findings,
                       introduced, outcome.reason)


async def _previous_findings(checker: Checker, ctx: CheckContext,
                             prior: _Previous) -> tuple[Finding, ...]:
    if checker.name not in prior.findings:
        work, scratch = prior.sandbox()
        assert prior.files is not None
        pctx = CheckContext(work, scratch, ctx.path, prior.files[ctx.path], ctx.options,
                            ctx.timeout_s, ctx.tools)
        outcome: Outcome = await checker.run(pctx)
        prior.findings[checker.name] = outcome.findings
    return prior.findings[checker.name]


def _introduced(current: tuple[Finding, ...], before: tuple[Finding, ...]) -> tuple[Finding, ...]:
    # A multiset: a second copy of a problem that existed once is still new.
    budget = Counter(f.key() for f in before)
    introduced = []
    for finding in current:
        if budget[finding.key()] > 0:
            budget[finding.key()] -= 1
        else:
            introduced.append(finding)
    return tuple(introduced)


def _skipped(name: str, reason: str) -> CheckResult:
    return CheckResult(name, CheckStatus.SKIPPED, False, (), 0, "", (), (), reason)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
