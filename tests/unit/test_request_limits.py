"""What one connection may hold or shape of the API: a body that does not arrive in time gets 408 and frees its task;
links come from the configured public URL, not from a client's Host (real HTTP through an in-process uvicorn)."""

from __future__ import annotations

import socket

import httpx

from tests.support.data import SHARED_DATA
from tests.support.served import served, settings_for


def read_response(conn: socket.socket) -> str:
    """One whole HTTP/1.1 response: its head, then as many body bytes as its Content-Length says (TCP may deliver
    them apart)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_a_body_that_does_not_arrive_gets_408_and_other_requests_go_on(tmp_path):
    settings = settings_for(tmp_path, redis_url=None, data_roots=[SHARED_DATA], LEARNGENE_BODY_TIMEOUT_S="1")
    with served(settings) as api:
        host, port = api.url.removeprefix("http://").split(":")
        slow = []
        for _ in range(3):  # three slow senders: headers promise 100 bytes, the body never comes
            conn = socket.create_connection((host, int(port)), timeout=60)  # a hang fails the recv below
            conn.sendall(
                b"POST /v1/initializations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            slow.append(conn)
        assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200  # meanwhile, others are served
        for conn in slow:
            answer = read_response(conn)
            conn.close()
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            assert "application/problem+json" in answer and "did not arrive within 1 s" in answer


def test_links_come_from_the_public_url_not_from_the_clients_host_header(tmp_path):
    public = "https://learngene.example.com/api"
    settings = settings_for(tmp_path, redis_url=None, data_roots=[SHARED_DATA], LEARNGENE_PUBLIC_URL=public)
    body = {"model": "vit_tiny_patch16_224", "template_set": "demo@prod",
            "overrides": {"depth": 2, "embed_dim": 32, "num_heads": 1, "img_size": 28, "patch_size": 7, "in_chans": 1,
                          "num_classes": 10}}  # fmt: skip
    with served(settings) as api, httpx.Client(base_url=api.url, timeout=60) as http:
        forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
        accepted = http.post("/v1/initializations", json=body, headers=forged)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert accepted.headers["location"] == f"{public}/v1/initializations/{job['id']}"
        assert job["links"]["self"] == accepted.headers["location"] and "evil" not in accepted.text
        http.post("/v1/initializations", json=body, headers=forged)
        listed = http.get("/v1/initializations", params={"limit": 1}, headers=forged).json()
        assert listed["next"].startswith(f"{public}/v1/initializations?")


def test_a_number_too_large_for_a_float_is_refused_naming_its_field(tmp_path):
    """JSON puts no bound on an integer's digits: one of 400 digits is over the limit, said in a line, not a 500."""
    settings = settings_for(tmp_path, redis_url=None, data_roots=[SHARED_DATA])
    huge = "1" + "0" * 400
    with served(settings) as api:
        for field in ("depth", "embed_dim", "num_classes"):
            body = '{"model": "vit_tiny_patch16_224", "overrides": {"' + field + '": ' + huge + "}}"
            answer = httpx.post(f"{api.url}/v1/initializations", content=body, timeout=30,
                                headers={"Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code == 422, answer.text
            [error] = answer.json()["errors"]
            assert (
                error["loc"] == ["body", "overrides", field] and f"{field}=1.000e+400 is over the limit" in error["msg"]
            )
