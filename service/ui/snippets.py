"""The initialization request that the new-initialization form describes, and that same request as the calls that
send it (curl, the CLI, Python): one builder for the form's live preview and for a template set's page."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from jobs.contracts import InitializationRequest

OVERRIDES = ("depth", "embed_dim", "num_heads", "img_size", "patch_size", "in_chans", "num_classes")
NUMBERS = (*OVERRIDES, "max_samples", "steps")
TEXTS = ("model", "template_set", "method", "calibration")
DEFAULT_MODEL = "vit_tiny_patch16_224"


def form_request(form: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The request the form's fields describe (empty fields left out) and what is wrong with it, field by field,
    in the API's own words: the same validation as POST /v1/initializations."""
    problems: list[tuple[str, str]] = []
    numbers: dict[str, int] = {}
    for field in NUMBERS:
        raw = form.get(field, "").strip()
        if raw:
            try:
                numbers[field] = int(raw)
            except ValueError:
                problems.append((field, "a whole number"))
    texts = {field: form.get(field, "").strip() for field in TEXTS}
    request: dict[str, Any] = {
        "model": texts["model"] or DEFAULT_MODEL,
        "overrides": {name: numbers[name] for name in OVERRIDES if name in numbers},
    }
    if texts["method"] and texts["method"] != "wave":
        request["method"] = texts["method"]
    if texts["template_set"]:
        request["template_set"] = texts["template_set"]
    if texts["calibration"]:
        request["calibration"] = {"uri": texts["calibration"]} | (
            {"max_samples": numbers["max_samples"]} if "max_samples" in numbers else {}
        )
    if "steps" in numbers:
        request["fit"] = {"steps": numbers["steps"]}
    try:
        InitializationRequest.model_validate(request)
    except ValidationError as error:
        problems += [(".".join(map(str, e["loc"])) or "request", e["msg"]) for e in error.errors(include_input=False)]
    return request, problems


def snippets(request: dict[str, Any], base_url: str, *, token: bool) -> dict[str, str]:
    """The request as curl, CLI and Python calls against `base_url`, and the folder that timm then loads.
    `token`: the deployment asks clients for a token (read from LEARNGENE_API_TOKEN)."""
    body = json.dumps(request, separators=(",", ":"))
    auth = ' -H "Authorization: Bearer $LEARNGENE_API_TOKEN"' if token else ""
    curl = (
        f"curl -s -X POST {shlex.quote(base_url + '/v1/initializations')} -H 'Content-Type: application/json'{auth} "
        f"-d {shlex.quote(body)}"
    )
    cli = ["learngene", "submit", "--url", base_url, "--model", request["model"]]
    for name, value in request.get("overrides", {}).items():
        cli += ["--set", f"{name}={value}"]
    if "template_set" in request:
        cli += ["--templates", request["template_set"]]
    if "method" in request:
        cli += ["--method", request["method"]]
    calibration = request.get("calibration") or {}
    if calibration:
        cli += ["--calibration", calibration["uri"]]
        if "max_samples" in calibration:
            cli += ["--max-samples", str(calibration["max_samples"])]
    if "fit" in request:
        cli += ["--steps", str(request["fit"]["steps"])]
    cli += ["--out", "checkpoint/"]
    arguments = [repr(request["model"])]
    for key in ("template_set", "method"):
        if key in request:
            arguments.append(f"{key}={request[key]!r}")
    if calibration:
        arguments.append(f"calibration={calibration['uri']!r}")
        if "max_samples" in calibration:
            arguments.append(f"max_samples={calibration['max_samples']!r}")
    if "fit" in request:
        arguments.append(f"fit={request['fit']!r}")
    arguments.append(f"url={base_url!r}")
    arguments += [f"{name}={value!r}" for name, value in request.get("overrides", {}).items()]
    python = "from learngene import create_model\n\nmodel = create_model(\n" + "".join(
        f"    {argument},\n" for argument in arguments
    )
    python += ")\n"
    return {"curl": curl, "CLI": shlex.join(cli), "Python": python, "timm": timm_snippet(base_url, "ID", token=token)}


def timm_snippet(base_url: str, job_id: str, *, token: bool) -> str:
    """A finished initialization's folder fetched and loaded by timm itself (`local-dir:`)."""
    auth = ' -H "Authorization: Bearer $LEARNGENE_API_TOKEN"' if token else ""
    folder = shlex.quote(f"{base_url}/v1/initializations/{job_id}/files.tar")
    load = shlex.quote(f'import timm; model = timm.create_model("local-dir:{job_id}")')
    return f"curl -s{auth} {folder} | tar x\npython -c {load}"
