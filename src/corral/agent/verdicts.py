"""The analysis windows of a service's latest roll-out, with their verdicts and thresholds.

Read from the events the executor already records (`rollout.analysis_started`, then
`rollout.analysis_pass|fail|inconclusive` with the figures), so a restarted agent or a
finished roll-out still shows them; the thresholds come from the apply's target strategy.
Events are read incrementally (a cursor per service), so a poll costs only what is new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from corral.api_schema import AnalysisThresholds, AnalysisVerdict, BakeWindow
from corral.state.protocol import StateStore
from corral.state.records import Event

PAGE = 500
MAX_PAGES = 200  # bounded catch-up: 100,000 events of one service
BAKE = "bake window"
VERDICTS = {f"rollout.analysis_{r}": r for r in ("pass", "fail", "inconclusive")}


@dataclass
class _Window:
    phase: str
    release: str
    window: float
    started_at: float
    step: int | None = None  # the canary step it belongs to (a `rollout.step` event before it)
    result: str = "running"
    detail: str | None = None
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class _Service:
    cursor: int = 0
    apply_id: str | None = None
    windows: list[_Window] = field(default_factory=list)
    step: tuple[str | None, int] | None = None  # (apply id, index) of the last step begun


class VerdictBook:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._services: dict[str, _Service] = {}
        self._strategies: dict[tuple[str, str], dict[str, Any]] = {}

    def view(
        self, service: str, running_apply: str | None
    ) -> tuple[list[AnalysisVerdict], BakeWindow | None]:
        """The windows of `running_apply` (or, with none running, of the latest one)."""
        seen = self._catch_up(service)
        if seen.apply_id is None or (running_apply and running_apply != seen.apply_id):
            return [], None
        strategy = self._strategy(seen.apply_id, service)
        now = time.time()
        verdicts: list[AnalysisVerdict] = []
        bake: BakeWindow | None = None
        steps_seen = 0
        for w in seen.windows:
            if w.phase == BAKE:
                thresholds = strategy.get("analysis")
            else:
                thresholds = _step_analysis(strategy, w.step, steps_seen)
                steps_seen += 1
            verdict = AnalysisVerdict(
                phase=w.phase,
                release=w.release,
                window=w.window,
                started_at=w.started_at,
                ends_at=w.started_at + w.window,
                result=w.result,
                detail=w.detail,
                figures=w.figures,
                thresholds=AnalysisThresholds.model_validate(thresholds) if thresholds else None,
            )
            verdicts.append(verdict)
            if w.phase == BAKE:
                running = w.result == "running"
                bake = BakeWindow(
                    release=w.release,
                    window=w.window,
                    started_at=w.started_at,
                    ends_at=verdict.ends_at,
                    remaining_seconds=round(max(0.0, verdict.ends_at - now), 1) if running else 0.0,
                    result=verdict.result,
                )
        return verdicts, bake

    def _catch_up(self, service: str) -> _Service:
        seen = self._services.setdefault(service, _Service())
        for _ in range(MAX_PAGES):
            page = self.store.list_events(service=service, after_seq=seen.cursor, limit=PAGE)
            for event in page:
                _take(seen, event)
            if page:
                seen.cursor = page[-1].seq
            if len(page) < PAGE:
                break
        return seen

    def _strategy(self, apply_id: str, service: str) -> dict[str, Any]:
        key = (apply_id, service)
        if key not in self._strategies:
            record = self.store.get_apply(apply_id)
            target = record.target if record else {}
            settings = (target.get("services", {}).get(service) or {}).get("settings") or {}
            self._strategies[key] = dict(settings.get("strategy") or {})
        return self._strategies[key]


def _take(seen: _Service, event: Event) -> None:
    data = event.data
    if event.kind == "rollout.step" and isinstance(data.get("step"), int):
        seen.step = (data.get("apply_id"), data["step"])
    elif event.kind == "rollout.analysis_started":
        apply_id = data.get("apply_id")
        if apply_id != seen.apply_id:  # a new roll-out: forget the last one's windows
            seen.apply_id = apply_id
            seen.windows = []
        seen.windows.append(
            _Window(
                phase=str(data.get("phase", "analysis")),
                release=f"r{data.get('release')}",
                window=float(data.get("window") or 0.0),
                started_at=event.ts,
                step=seen.step[1] if seen.step and seen.step[0] == apply_id else None,
            )
        )
    elif event.kind in VERDICTS and seen.windows and data.get("apply_id") == seen.apply_id:
        window = seen.windows[-1]
        result = VERDICTS[event.kind]
        window.result = result
        window.detail = _detail(event.message, result)
        window.figures = {
            k: float(v)
            for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "release"
        }


def _detail(message: str, result: str) -> str:
    """`web: analysis of r2: fail (error rate 20.0% …)` → `error rate 20.0% …`."""
    _, marker, rest = message.partition(f": {result} (")
    return rest[:-1] if marker and rest.endswith(")") else message


def _step_analysis(strategy: dict[str, Any], step: int | None, n: int) -> dict[str, Any] | None:
    """The thresholds of the step the window belongs to: by its recorded index, else (an
    agent that records no steps) the n-th analysis step of the spec."""
    steps = strategy.get("steps") or []
    if step is not None and 0 <= step < len(steps) and steps[step].get("analysis"):
        return dict(steps[step]["analysis"])
    analyses = [s["analysis"] for s in steps if s.get("analysis")]
    return dict(analyses[n % len(analyses)]) if analyses else None
