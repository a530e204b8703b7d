"""A webhook receiver on loopback for the tests: verifies every delivery with the `standardwebhooks` library (as a
receiver would), records what came, and answers as told: 200, 500, slowly (past the sender's timeout), or held until
released. It can be stopped and started again on the same port."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.scale import patient


@dataclass
class Received:
    webhook_id: str
    event: dict
    verified: dict[str, bool]  # secret name -> whether the signature verifies with it
    answered: int


@dataclass
class Receiver:
    secrets: dict[str, str] = field(default_factory=dict)  # name -> whsec_ secret
    mode: str = "ok"  # ok | fail (500) | slow (sleeps `slow_s`) | hold (until `release`)
    slow_s: float = 5.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    holding: int = 0  # requests held (mode "hold") so far

    def __post_init__(self) -> None:
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = {}
                for name, secret in receiver.secrets.items():
                    try:
                        Webhook(secret).verify(body, headers)
                        verified[name] = True
                    except WebhookVerificationError:
                        verified[name] = False
                mode = receiver.mode
                if mode == "slow":
                    time.sleep(receiver.slow_s)
                elif mode == "hold":
                    with receiver._lock:
                        receiver.holding += 1
                    receiver._released.wait(patient(120))
                code = 500 if mode == "fail" else 200
                with receiver._lock:
                    receiver.received.append(Received(headers["webhook-id"], json.loads(body), verified, code))
                try:
                    self.send_response(code)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up (timed out, or was killed)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._released.clear()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._released.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def release(self) -> None:
        self._released.set()

    def of_type(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.event["type"] == event]

    def wait_holding(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + patient(timeout)
        while self.holding == 0:
            if time.monotonic() > deadline:
                raise AssertionError("no request reached the receiver")
            time.sleep(0.05)

    def wait_for(self, what, timeout: float = 60) -> list[Received]:
        """Until `what(received)` is true; returns the deliveries received so far."""
        deadline = time.monotonic() + patient(timeout)
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.received)
            if what(seen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was awaited; it got {[r.event['type'] for r in seen]}")
