"""What a job is doing, and how long the whole of it has left.

Each kind of job goes through its phases in one order (`PLANS`). A worker reports the phase it enters
(`jobs.lease.Reporter.phase`); the time each phase took is kept as a histogram (`phase_seconds:<kind>.<phase>`), so
the whole job's ETA is the current phase's own (from its step rate) plus the phases still ahead at their mean
duration on this deployment. Before a phase has been seen to end once, it counts as nothing: the ETA only grows
more complete as the deployment runs jobs. Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from jobs.model import JobKind

Phase = Literal["queued", "loading_data", "fitting", "exporting", "publishing", "measuring_card"]
PLANS: dict[JobKind, tuple[Phase, ...]] = {
    JobKind.initialization: ("loading_data", "fitting", "exporting"),
    JobKind.condensation: ("loading_data", "fitting", "publishing", "measuring_card"),
    JobKind.card: ("measuring_card",),
}


def metric(kind: JobKind, phase: Phase) -> str:
    return f"phase_seconds:{kind.value}.{phase}"


def typical_durations(histograms: Mapping[str, Mapping[str, float]], kind: JobKind) -> dict[Phase, float]:
    """The mean duration of each of the kind's phases that has been seen to end."""
    out: dict[Phase, float] = {}
    for phase in PLANS[kind]:
        h = histograms.get(metric(kind, phase))
        if h and h.get("count"):
            out[phase] = h["sum"] / h["count"]
    return out


def whole_eta(kind: JobKind, phase: Phase, phase_eta_s: float | None, typical: Mapping[Phase, float]) -> float:
    """Seconds the job has left: what the current phase has left (its own estimate, else its typical duration),
    and the phases after it at their typical durations."""
    plan = PLANS[kind]
    ahead = plan[plan.index(phase) + 1 :] if phase in plan else ()
    current = phase_eta_s if phase_eta_s is not None else typical.get(phase, 0.0)
    return max(0.0, current) + sum(typical.get(p, 0.0) for p in ahead)


def shown_phase(kind: JobKind, status: str, reported: str | None) -> str | None:
    """The phase a job record shows: `queued` while queued, the last one reported while running (the first of its
    plan before any), none once it has ended."""
    if status == "queued":
        return "queued"
    if status == "running":
        return reported or PLANS[kind][0]
    return None
