"""Which checkers run on a file: named chains per language, and checker options.

Like executor settings, chains belong to the operator: the built-in ones below, plus any a
TOML file defines (the caller passes its path)::

    [chains.fast]
    python = ["parse", "ruff"]
    javascript = ["node-check"]     # a language left out gets no checks in this chain

    [checkers.ruff]
    fatal = ["E9", "F63", "F7", "F82"]
    timeout_s = 60                  # wins over the caller's per-check limit
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.qa.checkers import CHECKERS, CheckerOptions, Language, language_of
from devline.errors import ConfigError

Chain = Mapping[Language, tuple[str, ...]]

_DEFAULT: Chain = {Language.PYTHON: ("parse", "ruff", "pytest"),
                   Language.JAVASCRIPT: ("node-check", "node-test"),
                   Language.TYPESCRIPT: ("tsc", "node-test")}
BUILTIN_CHAINS: Mapping[str, Chain] = {
    "default": _DEFAULT,
    "strict": {**_DEFAULT, Language.PYTHON: ("parse", "ruff", "mypy", "pytest")},
    "syntax": {Language.PYTHON: ("parse",), Language.JAVASCRIPT: ("node-check",),
               Language.TYPESCRIPT: ("tsc",)},
    "off": {},
}
_OPTION_KEYS = {"timeout_s", "fatal"}


@dataclass(frozen=True)
class QAConfig:
    chains: Mapping[str, Chain]
    options: Mapping[str, CheckerOptions]

    @classmethod
    def builtin(cls) -> QAConfig:
        return cls(dict(BUILTIN_CHAINS), {})

    @classmethod
    def from_file(cls, path: Path | None) -> QAConfig:
        """The built-in chains plus those of the TOML file at `path` (None: built-in only)."""
        if path is None:
            return cls.builtin()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"QA config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"QA config {path} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "QA config") -> QAConfig:
        unknown = set(data) - {"chains", "checkers"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; "
                              "expected [chains.NAME] and [checkers.NAME]")
        chains = dict(BUILTIN_CHAINS)
        for name, table in _table(data, "chains", source).items():
            chains[name] = _parse_chain(name, table, source)
        options = {name: _parse_options(name, table, source)
                   for name, table in _table(data, "checkers", source).items()}
        return cls(chains, options)

    def chain(self, name: str, path: str) -> list[str]:
        """Checker names that run on `path` under chain `name`, in order."""
        if name not in self.chains:
            raise ConfigError(f"unknown QA chain {name!r}; known: {', '.join(self.names())}")
        language = language_of(path)
        if language is None:
            return []
        return [c for c in self.chains[name].get(language, ()) if CHECKERS[c].applies(path)]

    def names(self) -> list[str]:
        return sorted(self.chains)

    def options_for(self, checker: str) -> CheckerOptions:
        return self.options.get(checker, CheckerOptions())


def _table(data: Mapping[str, Any], key: str, source: str) -> dict[str, Mapping[str, Any]]:
    section = data.get(key, {})
    if not isinstance(section, Mapping) or not all(isinstance(v, Mapping)
                                                   for v in section.values()):
        raise ConfigError(f"{source}: [{key}] must hold tables, e.g. [{key}.NAME]")
    return {str(k): v for k, v in section.items()}


def _parse_chain(name: str, table: Mapping[str, Any], source: str) -> Chain:
    chain: dict[Language, tuple[str, ...]] = {}
    for lang, checkers in table.items():
        try:
            language = Language(lang)
        except ValueError:
            raise ConfigError(f"{source}: chain {name!r} names unknown language {lang!r}; "
                              f"known: {', '.join(sorted(Language))}") from None
        if not isinstance(checkers, list) or not all(isinstance(c, str) for c in checkers):
            raise ConfigError(f"{source}: chains.{name}.{lang} must be a list of names")
        for checker in checkers:
            if checker not in CHECKERS:
                raise ConfigError(f"{source}: chain {name!r} names unknown checker "
                                  f"{checker!r}; known: {', '.join(sorted(CHECKERS))}")
            if language not in CHECKERS[checker].languages:
                raise ConfigError(f"{source}: checker {checker!r} does not check {lang} "
                                  f"(chain {name!r})")
        chain[language] = tuple(checkers)
    return chain


def _parse_options(name: str, table: Mapping[str, Any], source: str) -> CheckerOptions:
    if name not in CHECKERS:
        raise ConfigError(f"{source}: [checkers.{name}] names unknown checker; "
                          f"known: {', '.join(sorted(CHECKERS))}")
    unknown = set(table) - _OPTION_KEYS
    if unknown:
        raise ConfigError(f"{source}: [checkers.{name}] unknown option(s) {sorted(unknown)}")
    timeout = table.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"{source}: checkers.{name}.timeout_s must be a positive number")
    fatal = table.get("fatal", [])
    if not isinstance(fatal, list) or not all(isinstance(f, str) and f for f in fatal):
        raise ConfigError(f"{source}: checkers.{name}.fatal must be a list of rule prefixes")
    if fatal and name != "ruff":
        raise ConfigError(f"{source}: only ruff takes `fatal` (every {name} error blocks)")
    return CheckerOptions(float(timeout) if timeout is not None else None, tuple(fatal))
