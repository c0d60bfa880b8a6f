"""Every checker by name. A chain lists these names; config validates against this table."""

from __future__ import annotations

from agents.qa.checkers.base import (
    CheckContext,
    Checker,
    CheckerOptions,
    Language,
    Outcome,
    language_of,
)
from agents.qa.checkers.js import NodeCheckChecker, NodeTestChecker, TscChecker
from agents.qa.checkers.python import MypyChecker, ParseChecker, PytestChecker, RuffChecker

CHECKERS: dict[str, Checker] = {c.name: c for c in (
    ParseChecker(), RuffChecker(), MypyChecker(), PytestChecker(),
    NodeCheckChecker(), TscChecker(), NodeTestChecker())}

__all__ = ["CHECKERS", "CheckContext", "Checker", "CheckerOptions", "Language", "Outcome",
           "language_of"]
