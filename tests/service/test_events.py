"""Live events of a running job (issue 26): a Server-Sent Events client reads a job on a real `learngene serve` to its
end, a second one resumes by `Last-Event-ID` and gets only what came after, and the record, the job list and
`learngene job wait` show the phase."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import httpx_sse

from service.client import Client
from tests.support.data import FMNIST
from tests.support.harness import REPO, wait_for
from tests.support.scale import PROCESS_TIMEOUT_S, patient

FITTED = {  # a few hundred scaler-fitting steps: a job that runs long enough to be watched
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 256},
    "fit": {"steps": 300, "batch_size": 16},
}


def order(event_id: str) -> tuple[int, ...]:
    return tuple(map(int, event_id.split("-")))


def read(http: httpx.Client, url: str, **headers: str) -> list[httpx_sse.ServerSentEvent]:
    with httpx_sse.connect_sse(http, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200 and source.response.headers["content-type"].startswith(
            "text/event-stream"
        )
        # The server closes the stream after `end`. The keep-alive comments (every second on the test stack) come
        # out of httpx-sse as empty events carrying the last id, which the SSE spec says are not dispatched.
        return [e for e in source.iter_sse() if e.data]


def test_an_event_stream_follows_a_job_to_its_end_and_resumes_after_the_last_event_seen(embedded_stack):
    with httpx.Client(base_url=embedded_stack.url, timeout=httpx.Timeout(30, read=120)) as http:
        job_id = http.post("/v1/initializations", json=FITTED).json()["id"]
        events = read(http, f"/v1/initializations/{job_id}/events")
        kinds = [e.event for e in events]
        assert kinds[0] == "status" and kinds[-1] == "end" and "progress" in kinds, kinds
        statuses = [json.loads(e.data)["status"] for e in events if e.event == "status"]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
        phases = [json.loads(e.data)["phase"] for e in events if e.event == "progress"]
        assert "fitting" in phases and set(phases) <= {"loading_data", "fitting", "exporting"}, phases
        fitting = [
            json.loads(e.data) for e in events if e.event == "progress" and json.loads(e.data)["phase"] == "fitting"
        ]
        assert any(p["step"] > 0 and p["total_steps"] == 300 and p["eta_s"] is not None for p in fitting)
        end = json.loads(events[-1].data)
        assert end["id"] == job_id and end["status"] == "succeeded" and end["checkpoint"]["sha256"]
        assert [e.id for e in events] == sorted({e.id for e in events}, key=order)

        middle = events[len(events) // 2]
        resumed = read(http, f"/v1/initializations/{job_id}/events", **{"Last-Event-ID": middle.id})
        assert resumed and all(order(e.id) > order(middle.id) for e in resumed) and resumed[-1].event == "end"
        assert read(http, f"/v1/initializations/{job_id}/events", **{"Last-Event-ID": events[-1].id}) == []
        assert http.get(f"/v1/initializations/{'0' * 32}/events").status_code == 404

        with Client(embedded_stack.url) as client:  # the Python client's reader, to the same end
            replay = [e["event"] for e in client.events(job_id)]  # an ended job: what its record keeps
            assert replay[0] == "status" and replay[-1] == "end" and replay.count("progress") == 1
            seen = list(client.events(job_id, last_event_id=middle.id))
            assert seen[-1]["event"] == "end" and seen[-1]["data"]["status"] == "succeeded"


def test_the_record_the_list_and_job_wait_show_the_phase(embedded_stack):
    """`job wait` on a job that runs until it is cancelled: its bar shows the phase and the whole job's ETA."""
    endless = {**FITTED, "fit": {"steps": 20_000, "batch_size": 16}}
    with httpx.Client(base_url=embedded_stack.url, timeout=30) as http:
        job_id = http.post("/v1/initializations", json=endless).json()["id"]
        assert http.get(f"/v1/initializations/{job_id}").json()["phase"] in ("queued", "loading_data", "fitting")
        wait = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "job", "wait", job_id, "--url", embedded_stack.url],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        shown = bytearray()

        def drain() -> None:  # the bar redraws in place: read what comes, as it comes
            while chunk := wait.stderr.read1(4096):
                shown.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        deadline = time.monotonic() + patient(PROCESS_TIMEOUT_S)
        while b"(fitting)" not in shown and wait.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        running = wait_for(http, f"/v1/initializations/{job_id}", lambda j: (j["progress"] or {}).get("step", 0) > 0)
        assert running["phase"] == "fitting" and running["progress"]["phase"] == "fitting"
        assert running["progress"]["total_steps"] == 20_000 and running["progress"]["eta_s"] > 0
        listed = http.get("/v1/initializations", params={"status": "running"}).json()["items"]
        assert [j["phase"] for j in listed if j["id"] == job_id] == ["fitting"]
        http.delete(f"/v1/initializations/{job_id}")
        assert wait.wait(patient(120)) == 2  # it ended cancelled
        reader.join(10)
        text = shown.decode(errors="replace")
        assert "running (fitting)" in text and "job eta=" in text, text[-2000:]
        assert http.get(f"/v1/initializations/{job_id}").json()["phase"] is None
