"""A job's events read off its record, and its phases and whole-job ETA (issue 26, "live events"), without a server:
ids that order and resume, the phase a record shows, and the Reporter timing each phase into the ETA of the next
job of its kind."""

from __future__ import annotations

import pytest

from jobs.job_events import END, EventId, job_events
from jobs.lease import Reporter
from jobs.memory_store import MemoryJobStore
from jobs.model import Job, JobError, JobKind, JobProgress, JobStatus
from jobs.phases import PLANS, metric, shown_phase, typical_durations, whole_eta
from learngene.train.loop import Progress

WARNING = {"code": "out_of_domain", "message": "m"}


def record(**fields) -> Job:
    return Job(id="j", kind=JobKind.initialization, request={}, created_at=100.0, warnings=[WARNING], **fields)


def test_events_come_in_the_order_they_happened_and_resume_after_an_id():
    queued = job_events(record())
    assert [e.event for e in queued] == ["status", "warning"] and queued[0].data == {"status": "queued",
                                                                                       "phase": "queued"}  # fmt: skip
    progress = JobProgress(phase="fitting", step=3, total_steps=10, eta_s=7.0, updated_at=102.5)
    running = job_events(record(status=JobStatus.running, started_at=101.0, progress=progress))
    assert [e.event for e in running] == ["status", "warning", "status", "progress"]
    assert running[3].data["phase"] == "fitting" and running[3].data["step"] == 3
    later = [e for e in running if e.id > running[1].id]  # what a client that saw the warning gets on reconnecting
    assert [e.event for e in later] == ["status", "progress"]
    extra = {"code": "calibration_small", "message": "x"}
    done = job_events(record(status=JobStatus.failed, started_at=101.0, finished_at=104.0, progress=progress,
                             result={"warnings": [WARNING, extra]}, error=JobError(type="T", message="m")))  # fmt: skip
    assert [e.event for e in done] == ["status", "warning", "status", "progress", "status", "warning", "end"]
    assert done[-1].id == EventId(104000, END) and done[-1].data["error"] == {"type": "T", "message": "m"}
    assert done[-2].data == extra  # only the warnings not sent at acceptance
    assert [str(e.id) for e in done] == sorted({str(e.id) for e in done}, key=lambda s: tuple(map(int, s.split("-"))))


@pytest.mark.parametrize("text", [None, "", "nonsense", "1-2-3", "-1-0", "99999999999999999-1", "1-" + "9" * 9])
def test_a_last_event_id_it_did_not_send_starts_from_the_beginning(text):
    assert EventId.parse(text) is None
    assert EventId.parse(" 104000-9999 ") == EventId(104000, 9999)


def test_the_whole_job_eta_adds_the_phases_ahead_at_their_typical_duration():
    typical = {"loading_data": 2.0, "fitting": 30.0, "publishing": 1.0, "measuring_card": 60.0}
    assert whole_eta(JobKind.condensation, "fitting", 12.0, typical) == 12.0 + 1.0 + 60.0
    assert whole_eta(JobKind.condensation, "publishing", None, typical) == 1.0 + 60.0
    assert whole_eta(JobKind.condensation, "loading_data", None, {}) == 0.0  # nothing seen yet: nothing counted
    histograms = {metric(JobKind.card, "measuring_card"): {"sum": 90.0, "count": 3.0}}
    assert typical_durations(histograms, JobKind.card) == {"measuring_card": 30.0}
    assert shown_phase(JobKind.condensation, "queued", None) == "queued"
    assert shown_phase(JobKind.condensation, "running", None) == "loading_data"
    assert shown_phase(JobKind.condensation, "running", "fitting") == "fitting"
    assert shown_phase(JobKind.condensation, "succeeded", "fitting") is None


def test_the_reporter_records_each_phase_and_times_it_for_the_next_job():
    jobs = MemoryJobStore()
    for n in range(2):
        job = Job.new(JobKind.initialization, {})
        jobs.create(job)
        jobs.claim(job.id, "worker-1", lease_s=30)  # progress is a running job's
        reporter = Reporter(jobs, job.id, kind=JobKind.initialization, min_interval_s=0)
        reporter.phase("fitting")
        fitting = jobs.get(job.id).progress
        assert fitting.phase == "fitting" and (fitting.step, fitting.total_steps) == (0, 0)
        if n == 1:  # the first job's phases are this deployment's typical durations now
            assert fitting.eta_s is not None and fitting.eta_s >= 0
        reporter.progress(Progress(step=4, total_steps=4, loss=0.5, accuracy=None, images_per_s=9.0, lr=0.1, eta_s=0))
        reporter.phase("exporting")  # no steps of its own: the fit's last counts stay, under the new phase
        exporting = jobs.get(job.id).progress
        assert (exporting.phase, exporting.step, exporting.total_steps, exporting.loss) == ("exporting", 4, 4, 0.5)
        reporter.phase(None)
    hist = jobs.metrics.histograms()
    assert all(hist[metric(JobKind.initialization, p)]["count"] == 2 for p in PLANS[JobKind.initialization])
