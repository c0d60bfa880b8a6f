"""Per-file QA: run a language's checker chain on a file an executor produced and say
whether it is verified or needs a fix (only problems the file introduces block).

Pure library: no Kafka. Tools run without a shell, in a throwaway sandbox holding the
plan's files, with a time limit and an environment that carries no secret.
"""

from __future__ import annotations

from agents.qa.chain import check_file
from agents.qa.config import BUILTIN_CHAINS, QAConfig
from agents.qa.model import CheckResult, CheckStatus, Finding, Verdict
from agents.qa.tools import ToolLocator

__all__ = ["BUILTIN_CHAINS", "CheckResult", "CheckStatus", "Finding", "QAConfig",
           "ToolLocator", "Verdict", "check_file"]
