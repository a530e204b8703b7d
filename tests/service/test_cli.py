"""The `learngene` command line: job commands as real subprocesses, store commands in-process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from learngene import TemplateSet, ViTSpec, export_checkpoint, read_metadata
from tests.support.cli import cli, last_json, learngene
from tests.support.data import FMNIST, REPO, write_idx_subset
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S

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
    run = learngene("init", "--templates", "demo", *DESCENDANT, "--calibration", f"idx://{FMNIST}", "--max-samples",
                    "128", "--steps", "3", "--out", str(folder))  # fmt: skip
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


def overrides(flag: str, spec: ViTSpec) -> list[str]:
    return [x for k, v in spec.overrides().items() for x in (flag, f"{k}={v}")]


def test_condense_publishes_into_the_store_and_the_store_commands_manage_it(ancestor, tmp_path):
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    anc_path = tmp_path / "ancestor.safetensors"
    export_checkpoint(ancestor, anc_path, spec=anc_spec)
    # No --ancestor-model or --ancestor-set: the architecture is the one the checkpoint's header records.
    run_args = [
        "condense", "--ancestor", str(anc_path),
        "--aux-model", anc_spec.model, *overrides("--aux-set", tiny_spec(depth=2)),
        "--data", f"idx://{FMNIST}", "--eval-data", f"idx://{FMNIST}?split=test", "--steps", "30", "--batch-size", "32",
        "--recipe", "plain",
    ]  # fmt: skip
    args = [*run_args, "--publish", "mini"]
    run = learngene(*args)
    assert run.returncode == 0, run.stderr
    summary = last_json(run)
    assert summary["ref"] == "mini@1" and summary["metrics"]["aux_accuracy"] > 0.2
    assert summary["already_published"] is False

    listed = json.loads(cli("templates", "list", "mini", "--json").stdout)
    assert [(v["name"], v["version"], v["digest"]) for v in listed] == [("mini", 1, summary["digest"])]
    shown = json.loads(cli("templates", "show", "mini@1", "--json").stdout)
    lineage = shown["manifest"]["lineage"]
    assert lineage["ancestor_sha256"] == hashlib.sha256(anc_path.read_bytes()).hexdigest()
    assert lineage["ancestor_model"] == anc_spec.model and lineage["ancestor_overrides"] == anc_spec.overrides()
    assert lineage["data_uri"] == f"idx://{FMNIST}" and len(lineage["data_digest"]) == 64
    assert set(shown["manifest"]["metrics"]) == {"aux_accuracy", "ancestor_accuracy", "final_loss"}

    rerun = learngene(*args)  # finished and published: the same version again, nothing new in the store
    assert rerun.returncode == 0, rerun.stderr
    again = last_json(rerun)
    assert (again["ref"], again["digest"], again["already_published"]) == ("mini@1", summary["digest"], True)
    assert again["metrics"] == summary["metrics"]
    assert "note: this run was already published as mini@1" in rerun.stderr
    assert [v["version"] for v in json.loads(cli("templates", "list", "mini", "--json").stdout)] == [1]

    folder = tmp_path / "mini-set"  # the same run published elsewhere: resumes its finished state, publishes anew
    resumed = learngene(*run_args, "--out", str(folder), "--name", "mini", "--publish", "other")
    assert resumed.returncode == 0 and "condensation resumes at step 30 of 30" in resumed.stderr, resumed.stderr
    assert (last_json(resumed)["ref"], last_json(resumed)["already_published"]) == ("other@1", False)
    second = json.loads(cli("templates", "publish", str(folder), "--json").stdout)
    assert second["ref"] == "mini@2"

    assert cli("templates", "promote", "mini", "1", "prod").returncode == 0
    assert cli("templates", "promote", "mini", "2", "prod").returncode == 0
    assert json.loads(cli("templates", "rollback", "mini", "prod", "--json").stdout)["version"] == 1
    refused = cli("templates", "delete", "mini@1")
    assert refused.returncode == 2 and "target of alias(es) prod" in refused.stderr
    assert json.loads(cli("templates", "delete", "mini@2", "--json").stdout)["deleted"] is True
    assert json.loads(cli("templates", "verify", "mini@prod", "--json").stdout)["ok"] is True
    assert json.loads(cli("templates", "gc", "--json").stdout) == {"removed": [], "damaged": []}
    table = cli("templates", "list")
    assert "mini" in table.stdout and "prod" in table.stdout

    out = tmp_path / "d.safetensors"
    descendant = ["--set", "depth=3", *overrides("--set", tiny_spec(embed_dim=64, num_heads=2))]
    init = cli(
        "init", "--templates", "mini@prod", "--model", anc_spec.model, *descendant, "--steps", "0", "--out", str(out)
    )
    assert init.returncode == 0, init.output
    assert read_metadata(out)["template_set"] == {"name": "mini", "version": 1, "digest": summary["digest"]}


def test_tampered_store_is_reported_by_verify():
    assert cli("templates", "verify", "demo").returncode == 0  # publishes the demo on first use
    tensors = Path(os.environ["LEARNGENE_STORE"]) / "demo" / "1" / "tensors.safetensors"
    original = tensors.read_bytes()
    try:
        tensors.write_bytes(original[:-7] + b"tamper!")
        bad = cli("templates", "verify", "demo")
        assert bad.returncode == 2 and "sha256 does not match" in bad.stderr
    finally:
        tensors.write_bytes(original)


def test_the_demo_rebuild_script_runs_end_to_end(tmp_path):
    """scripts/build_demo_templates.sh, shortened: it trains an ancestor, condenses it and writes a loadable set
    (on 2,000 training and 500 test images of FashionMNIST: the commands, not the numbers, are under test)."""
    data = write_idx_subset(tmp_path / "FashionMNIST", train=2000, test=500)
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "WORK": str(tmp_path / "work"),
           "OUT": str(tmp_path / "demo"), "DATA": str(data), "ANCESTOR_STEPS": "30", "CONDENSE_STEPS": "20",
           "CARD_STEPS": "2", "CARD_SAMPLES": "128"}  # fmt: skip
    run = subprocess.run(["bash", "scripts/build_demo_templates.sh"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=PROCESS_TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rebuilt = TemplateSet.load(tmp_path / "demo")
    assert rebuilt.name == "demo" and rebuilt.config.architecture == rebuilt.config.arch
    assert set(rebuilt.metrics) == {"ancestor_accuracy", "aux_accuracy", "final_loss"}
    assert sum(f.stat().st_size for f in (tmp_path / "demo").iterdir()) < 3_000_000
    assert not (tmp_path / "demo.new").exists()
    card = json.loads((tmp_path / "demo" / "card.json").read_text())  # its quality card ships with it
    assert card["template_set"] == "demo@1" and len(card["rows"]) == 6 and card["rows"][0]["fit_steps"] == 2


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
    assert missing.stderr.splitlines() == [
        "error: the API answered 404: initialization job 'no-such-job' does not exist"
    ]
    refused = learngene("submit", "--model", "vit_tiny_patch16_224", "--set", "depth=0", "--url", embedded_stack.url)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("error: the API answered 422: ") and "depth" in refused.stderr
    assert "HTTP Request" not in missing.stderr + refused.stderr  # httpx's INFO line per request
    verbose = learngene("--verbose", "job", "status", "no-such-job", "--url", embedded_stack.url)
    request_line = f'HTTP Request: GET {embedded_stack.url}/v1/initializations/no-such-job "HTTP/1.1 404 Not Found"'
    assert request_line in verbose.stderr
