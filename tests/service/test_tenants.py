"""What one client can learn of another's work, on the session's guarded stack (an embedded API with client tokens):
not that it ran the same request, nor how long that took."""

from __future__ import annotations

import httpx

from tests.support.data import FMNIST
from tests.support.harness import finished, wait_for
from tests.support.stacks import STACK_CLIENTS

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=32, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "template_set": "demo@prod",
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 64},
    "fit": {"steps": 3, "batch_size": 16, "seed": 20261203},
}


def run(stack, client: str) -> dict:
    headers = {"Authorization": f"Bearer {STACK_CLIENTS[client]}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as http:
        accepted = http.post("/v1/initializations", json=BODY)
        assert accepted.status_code == 202, accepted.text
        return wait_for(http, f"/v1/initializations/{accepted.json()['id']}", finished)


def test_the_result_cache_is_kept_per_client(guarded_stack):
    first = run(guarded_stack, "gamma")
    other = run(guarded_stack, "beta")  # the same request by another client: run again, not served from gamma's run
    again = run(guarded_stack, "gamma")
    assert [job["status"] for job in (first, other, again)] == ["succeeded"] * 3
    assert (first["result"]["cached"], other["result"]["cached"], again["result"]["cached"]) == (False, False, True)
    assert other["result"]["fit"]["seconds"] != first["result"]["fit"]["seconds"]  # its own run's timings
    assert again["result"]["fit"] == first["result"]["fit"]  # gamma's own earlier run, as it was
