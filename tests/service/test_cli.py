"""The `learngene` command line: job commands as real subprocesses, store commands in-process."""

from __future__ import annotations

import hashlib
import json
import re
import socket

import timm
import torch
from safetensors.torch import load_file

from learngene import ViTSpec
from tests.support.cli import cli, last_json, learngene
from tests.support.data import FMNIST

SHAPE = "--set img_size=28 --set patch_size=7 --set in_chans=1 --set num_classes=10".split()
DESCENDANT = ["--model", "vit_tiny_patch16_224", *"--set depth=3 --set embed_dim=128 --set num_heads=2".split(), *SHAPE]


def test_init_with_the_demo_templates_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "vit.safetensors"
    calibration = ["--calibration", f"idx://{FMNIST}", "--max-samples", "512", "--steps", "20"]
    run = learngene("init", "--templates", "demo", *DESCENDANT, *calibration, "--out", str(out))
    assert run.returncode == 0, run.stderr
    summary = last_json(run)
    assert summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    fit = summary["fit"]
    assert fit["steps"] == 20 and fit["calibration_loss_after"] < fit["calibration_loss_before"]
    assert summary["template_set"] == "demo@1"
    spec = ViTSpec.model_validate(summary["spec"])
    model = spec.build()
    model.load_state_dict(load_file(out), strict=True)
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())

    evaluation = learngene("evaluate", str(out), "--data", f"idx://{FMNIST}?split=test", "--max-samples", "1000")
    assert evaluation.returncode == 0, evaluation.stderr
    assert last_json(evaluation)["accuracy"] > 0.6  # chance is 0.1; a depth-3 descendant fitted for 20 steps
    assert "evaluate: 100%" in evaluation.stderr and "1000/1000" in evaluation.stderr  # its progress bar


def test_init_into_a_folder_that_timm_loads_with_local_dir(tmp_path):
    folder = tmp_path / "vit-d3"
    run = learngene(
        "init",
        "--templates",
        "demo",
        *DESCENDANT,
        "--calibration",
        f"idx://{FMNIST}",
        "--max-samples",
        "128",
        "--steps",
        "3",
        "--out",
        str(folder),
    )
    assert run.returncode == 0, run.stderr
    summary = last_json(run)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert summary["folder"] == str(folder) and summary["path"] == str(folder / "model.safetensors")
    for name, entry in summary["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"], name
    spec = ViTSpec.model_validate(summary["spec"])
    strict = spec.build().eval()
    strict.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), strict(x))
    assert "template set: `demo@1`" in (folder / "README.md").read_text()


def test_bad_requests_exit_2_with_the_field_named(tmp_path):
    out = ["--out", str(tmp_path / "x.safetensors")]
    bad_width = learngene("init", "--templates", "demo", *DESCENDANT, "--set", "embed_dim=201", *out)
    assert bad_width.returncode == 2
    assert "num_heads: embed_dim=201 is not divisible by num_heads=2" in bad_width.stderr
    assert "Traceback" not in bad_width.stderr
    unknown = cli("init", "--templates", "nope", *DESCENDANT, *out)
    assert unknown.returncode == 2 and "template set 'nope' does not exist" in unknown.stderr
    (tmp_path / "plain-file").write_text("")
    not_a_folder = cli("init", "--templates", "demo", *DESCENDANT, "--out", str(tmp_path / "plain-file"))
    assert not_a_folder.returncode == 2 and "plain-file: not a folder" in not_a_folder.stderr
    odd = cli("init", "--templates", "../demo", *DESCENDANT, *out)
    assert odd.returncode == 2 and "name '../demo' must be" in odd.stderr
    calibration = ["--calibration", f"idx://{FMNIST}"]
    outside = learngene(
        "init", "--templates", "demo", *DESCENDANT, *calibration, *out, LEARNGENE_DATA_ROOTS=json.dumps([str(tmp_path)])
    )
    assert outside.returncode == 2 and "outside the allowed data roots" in outside.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_an_unreachable_api_is_one_line_on_stderr_and_exit_3():
    with socket.socket() as bound:  # a port held by this test and never listened on: refused, and no one takes it
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        for args in (["job", "status", "some-job"], ["submit", "--model", "vit_tiny_patch16_224"]):
            run = learngene(*args, "--url", url)
            assert run.returncode == 3, run.stderr
            assert run.stderr.splitlines() == [f"error: cannot reach the API at {url} (connection refused)"]


def test_api_error_answers_are_one_line_and_request_logs_only_with_verbose(embedded_stack):
    missing = learngene("job", "status", "no-such-job", "--url", embedded_stack.url)
    assert missing.returncode == 2
    (line,) = missing.stderr.splitlines()
    assert re.fullmatch(
        r"error: the API answered 404: initialization job 'no-such-job' does not exist \(request id [\w-]{16,}\)", line
    ), line  # the id the API's own log lines carry for that request
    refused = learngene("submit", "--model", "vit_tiny_patch16_224", "--set", "depth=0", "--url", embedded_stack.url)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("error: the API answered 422: ") and "depth" in refused.stderr
    assert "HTTP Request" not in missing.stderr + refused.stderr  # httpx's INFO line per request
    verbose = learngene("--verbose", "job", "status", "no-such-job", "--url", embedded_stack.url)
    request_line = f'HTTP Request: GET {embedded_stack.url}/v1/initializations/no-such-job "HTTP/1.1 404 Not Found"'
    assert request_line in verbose.stderr
