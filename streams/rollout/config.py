"""The operator's rollout configuration: deploy targets, metric sources, rules, judge.

A YAML or JSON file (`--config` / DEVLINE_ROLLOUT_CONFIG)::

    target: sim                 # default target (a plan may pick one: rollout.target)
    source: sim                 # default metric source (rollout.source)
    targets:  {sim: {type: simulated}, deploy: {type: command, argv: [./deploy.sh]}}
    sources:  {sim: {type: simulated}, prom: {type: prometheus, url: ..., queries: {...}}}
    metrics:  {error_rate: {failure: "result > 0.05", min_samples: 20}}
    judge:    {metrics: [{name: latency_p95}]}

Without a file: one simulated target and source, no metric rules (bakes without analysis).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.rollout.sources import MetricSource, build_source
from agents.rollout.targets import DeployTarget, build_target
from devline.errors import ConfigError

ENV = "DEVLINE_ROLLOUT_CONFIG"
DEFAULT = {"target": "sim", "source": "sim", "targets": {"sim": {"type": "simulated"}},
           "sources": {"sim": {"type": "simulated"}}}


@dataclass
class RolloutConfig:
    """Validated config; builds each target and source once."""

    raw: Mapping[str, Any]
    targets: dict[str, DeployTarget] = field(default_factory=dict)
    sources: dict[str, MetricSource] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> RolloutConfig:
        raw = {**DEFAULT, **raw}
        for part in ("targets", "sources"):
            if not isinstance(raw.get(part), Mapping) or not raw[part]:
                raise ConfigError(f"rollout config: {part} must be a non-empty mapping")
        cfg = cls(raw)
        cfg.targets = {str(n): build_target(str(n), c) for n, c in raw["targets"].items()}
        cfg.sources = {str(n): build_source(str(n), c, cfg.targets)
                       for n, c in raw["sources"].items()}
        return cfg

    @classmethod
    def load(cls, path: Path | None) -> RolloutConfig:
        if path is None:
            return cls.from_mapping({})
        try:
            text = Path(path).read_text(encoding="utf-8")
            if str(path).endswith(".json"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except OSError as exc:
            raise ConfigError(f"rollout config {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"rollout config {path} is not valid: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"rollout config {path}: expected a mapping")
        return cls.from_mapping(data)

    def rules(self) -> dict[str, Any]:
        """The `metrics` and `judge` part that `parse_spec` reads."""
        return {"metrics": dict(self.raw.get("metrics") or {}), "judge": self.raw.get("judge")}

    def target(self, name: str | None) -> DeployTarget:
        return self._pick(self.targets, name or str(self.raw.get("target") or ""), "target")

    def source(self, name: str | None) -> MetricSource:
        return self._pick(self.sources, name or str(self.raw.get("source") or ""), "source")

    @staticmethod
    def _pick(found: Mapping[str, Any], name: str, what: str) -> Any:
        if name in found:
            return found[name]
        if not name and len(found) == 1:
            return next(iter(found.values()))
        raise ConfigError(f"no rollout {what} named {name!r} (configured: {sorted(found)})")

    async def close(self) -> None:
        for target in self.targets.values():
            await target.close()
