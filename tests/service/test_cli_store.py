"""The `learngene` store commands and the long CLI runs (a condensation published into the store, the demo rebuild
script), as real subprocesses: a module of their own, so that they run beside tests/service/test_cli.py on another
test worker."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from learngene import TemplateSet, ViTSpec, export_checkpoint, read_metadata
from tests.support.cli import cli, last_json, learngene
from tests.support.data import REPO, write_idx_subset
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S


def overrides(flag: str, spec: ViTSpec) -> list[str]:
    return [x for k, v in spec.overrides().items() for x in (flag, f"{k}={v}")]


def test_condense_publishes_into_the_store_and_the_store_commands_manage_it(ancestor, tmp_path):
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    anc_path = tmp_path / "ancestor.safetensors"
    export_checkpoint(ancestor, anc_path, spec=anc_spec)
    data = write_idx_subset(tmp_path / "FashionMNIST", train=2000, test=1000)  # three condensations read it
    # No --ancestor-model or --ancestor-set: the architecture is the one the checkpoint's header records.
    run_args = [
        "condense", "--ancestor", str(anc_path),
        "--aux-model", anc_spec.model, *overrides("--aux-set", tiny_spec(depth=2)),
        "--data", f"idx://{data}", "--eval-data", f"idx://{data}?split=test", "--steps", "30", "--batch-size", "32",
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
    assert lineage["data_uri"] == f"idx://{data}" and len(lineage["data_digest"]) == 64
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
    run = subprocess.run(
        ["bash", "scripts/build_demo_templates.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rebuilt = TemplateSet.load(tmp_path / "demo")
    assert rebuilt.name == "demo" and rebuilt.config.architecture == rebuilt.config.arch
    assert set(rebuilt.metrics) == {"ancestor_accuracy", "aux_accuracy", "final_loss"}
    assert sum(f.stat().st_size for f in (tmp_path / "demo").iterdir()) < 3_000_000
    assert not (tmp_path / "demo.new").exists()
    card = json.loads((tmp_path / "demo" / "card.json").read_text())  # its quality card ships with it
    assert card["template_set"] == "demo@1" and len(card["rows"]) == 6 and card["rows"][0]["fit_steps"] == 2
