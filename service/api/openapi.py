"""The OpenAPI document as client generators read it, and the pages that show it.

- every operation has an explicit camelCase id (`OPERATION_IDS`, keyed by route name), so generated clients never
  get FastAPI's `create_initialization_v1_initializations_post` (a test holds every operation to the table);
- tokens are two HTTP bearer security schemes (`adminToken`, `clientToken`, declared in `service.api.deps`); the
  client scheme is optional (`{}` among the alternatives) where the deployment sets no LEARNGENE_CLIENT_TOKENS;
- every operation has a tag described in `TAGS`; the main operations carry request and response examples;
- file downloads are described as binary strings, so generators hand back bytes instead of dropping the body;
- /docs (Swagger UI) and /redoc are served from assets bundled in the `fastapi-offline` package: they work without
  internet access and load nothing from another origin.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.utils import generate_unique_id
from pydantic import BaseModel

from jobs.contracts import CondensationRequest, InitializationRequest, describe
from jobs.logs import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from jobs.settings import Settings
from service.api.deps import CLIENT_SCHEME
from service.api.pages import encode_cursor
from service.api.schemas import JobList, JobView, TemplateSetView

# Route name -> operation id. Job routes are named "<route>.<action>" by service.api.routes.jobs.job_routes (one
# factory for initializations, condensations and card jobs); the others by their function.
OPERATION_IDS: dict[str, str] = {
    # initializations
    "create_initialization": "createInitialization",
    "initializations.list": "listInitializations",
    "initializations.get": "getInitialization",
    "initializations.cancel": "cancelInitialization",
    "initializations.checkpoint": "downloadCheckpoint",
    "initializations.checkpoint_head": "headCheckpoint",
    "initializations.file": "downloadCheckpointFile",
    "initializations.file_head": "headCheckpointFile",
    "initializations.folder": "downloadCheckpointFolder",
    "initializations.release": "releaseCheckpoint",
    "initializations.logs": "getInitializationLogs",
    "initializations.events": "getInitializationEvents",
    # template sets
    "list_template_sets": "listTemplateSets",
    "get_template_set": "getTemplateSet",
    "download_template_set": "downloadTemplateSet",
    "get_card": "getQualityCard",
    "get_card_png": "getQualityCardPlot",
    "get_model_card": "getModelCard",
    "get_lineage": "getLineage",
    # admin
    "create_condensation": "createCondensation",
    "condensations.list": "listCondensations",
    "condensations.get": "getCondensation",
    "condensations.cancel": "cancelCondensation",
    "condensations.logs": "getCondensationLogs",
    "condensations.events": "getCondensationEvents",
    "create_card": "createCardJob",
    "cards.list": "listCardJobs",
    "cards.get": "getCardJob",
    "cards.cancel": "cancelCardJob",
    "cards.logs": "getCardJobLogs",
    "cards.events": "getCardJobEvents",
    "set_alias": "setAlias",
    "jobs.list": "listJobs",  # every kind
    "create_webhook": "createWebhook",
    "list_webhooks": "listWebhooks",
    "get_webhook": "getWebhook",
    "delete_webhook": "deleteWebhook",
    "list_deliveries": "listWebhookDeliveries",
    "redeliver": "redeliverWebhook",
    # operations
    "healthz": "getLiveness",
    "readyz": "getReadiness",
    "metrics": "getMetrics",
    "problems.get": "getProblemType",
    "get_signing_key": "getSigningKey",
}

TAGS: list[dict[str, str]] = [
    {
        "name": "initializations",
        "description": "Submit a target architecture, poll the job, download the initialized timm checkpoint (one "
        "safetensors file, a timm / Hugging Face folder file by file, or the folder as one tar).",
    },
    {
        "name": "template sets",
        "description": "The condensed learngenes that initializations inherit from: versions, aliases, manifests "
        "and quality cards.",
    },
    {
        "name": "admin",
        "description": "Condensation and quality-card jobs, alias promotion and rollback. Bearer `adminToken` "
        "(LEARNGENE_ADMIN_TOKEN); without it set, these endpoints answer 403.",
    },
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics; no token needed."},
]


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function`: the route's id from `OPERATION_IDS`. A route missing there keeps
    FastAPI's generated id (FastAPI builds included routes lazily, so raising here would fail its requests, not the
    start); tests/service/test_openapi.py refuses any such id and names the route."""
    return OPERATION_IDS.get(route.name) or generate_unique_id(route)


# ---------------------------------------------------------------------------------------------------------- examples
# Built through the request and response models, so an example that stops matching them fails at import (and the
# records show defaults exactly as the service fills them in).

_TARGET = {
    "model": "vit_tiny_patch16_224",
    "overrides": {"depth": 12, "embed_dim": 128, "num_heads": 2, "img_size": 28, "patch_size": 7, "in_chans": 1,
                  "num_classes": 10},
}  # fmt: skip
INITIALIZATION = {
    **_TARGET,
    "template_set": "demo@prod",
    "calibration": {"uri": "idx:///data/datasets/FashionMNIST", "max_samples": 2048},
    "fit": {"steps": 200, "seed": 0},
}
CONDENSATION = {
    "name": "fmnist",
    "method": "wave",
    "ancestor": {"model": "vit_tiny_patch16_224",
                 "overrides": {"depth": 6, "embed_dim": 128, "num_heads": 2, "img_size": 28, "patch_size": 7,
                               "in_chans": 1, "num_classes": 10},
                 "checkpoint": "/data/datasets/ancestors/vit-d6-w128-fmnist.safetensors"},
    "aux": {"model": "vit_tiny_patch16_224",
            "overrides": {"depth": 6, "embed_dim": 64, "num_heads": 1, "img_size": 28, "patch_size": 7, "in_chans": 1,
                          "num_classes": 10}},
    "data": {"uri": "idx:///data/datasets/FashionMNIST"},
    "eval_data": "idx:///data/datasets/FashionMNIST?split=test",
    "training": {"steps": 4000, "recipe": "plain"},
    "promote": "prod",
}  # fmt: skip

_BASE = "https://learngene.example.com/v1"
_DEMO = {"name": "demo", "version": 1, "digest": "c4e48641dbe45abec74b5c84cf7038d0ebfdecc73f5a09a8094610713f94ac89"}
_CREATED = 1764669600.25  # 2025-12-02T10:00:00.25Z


def _job(kind: str, job_id: str, route: str, request: BaseModel, **fields: Any) -> dict[str, Any]:
    url = f"{_BASE}/{route}/{job_id}"
    links = {"self": url, "cancel": url}
    if kind == "initialization":
        links |= {"checkpoint": f"{url}/checkpoint", "folder": f"{url}/files.tar"}
    view = {"id": job_id, "kind": kind, "status": "queued", "attempts": 0, "max_attempts": 3, "template_set": None,
            "request": describe(request), "timings": {"created_at": _CREATED}, "links": links, **fields}  # fmt: skip
    return JobView.model_validate(view).model_dump(mode="json")


_INIT_ID = "b4cdaf169c724d9c80bbbcf6bcfc8d6b"
_INIT_URL = f"{_BASE}/initializations/{_INIT_ID}"
_FILES = {
    "model.safetensors": ("ec1578e088cb3ad39e8ef8bbf50be006f84f07538a69a8240725aa7a10958e84", 9_573_088),
    "config.json": ("9076e869f27cb54071f1eb1fa394304e11b1381df7fabc60de4f26d0cfedc257", 623),
    "README.md": ("7f3bb83ae37c695bba113c252ec83ec7edf4e667b13080320bb24a745ba3b92d", 1_825),
}
JOB_ACCEPTED = _job(
    "initialization",
    _INIT_ID,
    "initializations",
    InitializationRequest.model_validate(INITIALIZATION),
    template_set=_DEMO,
)
JOB_SUCCEEDED = _job(
    "initialization", _INIT_ID, "initializations", InitializationRequest.model_validate(INITIALIZATION),
    template_set=_DEMO, status="succeeded", attempts=1,
    progress={"step": 200, "total_steps": 200, "loss": 0.412, "accuracy": 0.859, "images_per_s": 1610.4, "eta_s": 0.0,
              "updated_at": _CREATED + 41.2},
    timings={"created_at": _CREATED, "started_at": _CREATED + 0.4, "finished_at": _CREATED + 42.1, "queued_s": 0.4,
             "running_s": 41.7},
    result={"method": "wave", "template_set": "demo@1", "warnings": [], "cached": False,
            "fit": {"steps": 200, "calibration_samples": 2048, "calibration_loss_before": 0.622,
                    "calibration_loss_after": 0.381, "calibration_accuracy_before": 0.781,
                    "calibration_accuracy_after": 0.866, "heldout_samples": 0, "heldout_accuracy": None,
                    "trainable_parameters": 15530, "seconds": 38.9}},
    checkpoint={"sha256": _FILES["model.safetensors"][0], "bytes": _FILES["model.safetensors"][1],
                "parameters": 2389514, "download": f"{_INIT_URL}/checkpoint", "folder": f"{_INIT_URL}/files.tar",
                "files": {name: {"sha256": sha, "bytes": size, "download": f"{_INIT_URL}/files/{name}"}
                          for name, (sha, size) in _FILES.items()}},
)  # fmt: skip
CONDENSATION_ACCEPTED = _job(
    "condensation", "7c1d0e9a4f2b4d6c8a3e5f7b9d1c2e4a", "admin/condensations",
    CondensationRequest.model_validate(CONDENSATION),
)  # fmt: skip
JOB_PAGE = JobList(
    items=[JOB_SUCCEEDED], next=f"{_BASE}/initializations?limit=1&cursor={encode_cursor(_CREATED, _INIT_ID)}"
).model_dump(mode="json")
TEMPLATE_SET = TemplateSetView(
    ref="demo@1",
    digest=_DEMO["digest"],
    aliases={"prod": 1},
    manifest={
        "schema_version": 1, "name": "demo", "version": 1, "method": "wave", "created": "2026-11-24T07:47:58+00:00",
        "config": {"method": "wave",
                   "aux": {"model": "vit_tiny_patch16_224", "depth": 6, "embed_dim": 64, "num_heads": 1},
                   "templates": {"size": 64, "counts": {"qkv": 6, "proj": 2, "fc1": 8, "fc2": 8}},
                   "normalization": {"mean": [0.286], "std": [0.353]}},
        "lineage": {"ancestor_model": "vit_tiny_patch16_224",
                    "ancestor_overrides": {"depth": 6, "embed_dim": 128, "num_heads": 2},
                    "data_uri": "idx://../shared/data/FashionMNIST", "code_version": "0.1.0"},
        "metrics": {"ancestor_accuracy": 0.8929, "aux_accuracy": 0.8792, "final_loss": 0.3741},
        "parameters": {"free": 5130, "scalers": 816, "templates": 100352},
    },
).model_dump(mode="json")  # fmt: skip

# operation id -> named examples of its JSON request body; (operation id, status) -> those of its JSON answer
REQUEST_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "createInitialization": {
        "wave-with-calibration": {
            "summary": "A 12-block ViT-Tiny for 28x28 greyscale images, scalers fitted on 2048 calibration images",
            "value": INITIALIZATION,
        },
        "pure-inheritance": {
            "summary": "Inherit only: no calibration data, so no scaler fitting (fit.steps defaults to 0)",
            "value": _TARGET,
        },
    },
    "createCondensation": {
        "wave": {
            "summary": "Condense a 6-block ViT of width 128 into WAVE templates of width 64, promoted to prod",
            "value": CONDENSATION,
        }
    },
}
RESPONSE_EXAMPLES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("createInitialization", "202"): {"queued": {"summary": "accepted: poll links.self", "value": JOB_ACCEPTED}},
    ("getInitialization", "200"): {
        "succeeded": {"summary": "done: download checkpoint.download", "value": JOB_SUCCEEDED}
    },
    ("createCondensation", "202"): {
        "queued": {"summary": "accepted on the condense queue", "value": CONDENSATION_ACCEPTED}
    },
    ("getTemplateSet", "200"): {"demo": {"summary": "the bundled demo set", "value": TEMPLATE_SET}},
    ("listInitializations", "200"): {
        "page": {
            "summary": "a page of one job, with the link to the next (null on the last page)",
            "value": JOB_PAGE,
        }
    },
}


# ---------------------------------------------------------------------------------------------------------- document

JSON = "application/json"
BINARY = {"type": "string", "format": "binary"}


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in document.get("paths", {}).values():
        yield from path_item.values()


def _describe_bodies(operation: dict[str, Any]) -> None:
    """Files and text have no pydantic model, so FastAPI leaves their schema empty: say what they are."""
    for response in operation.get("responses", {}).values():
        for media_type, content in response.get("content", {}).items():
            if media_type == JSON or media_type.endswith("+json") or content.get("schema"):
                continue
            content["schema"] = {"type": "string"} if media_type.startswith("text/") else dict(BINARY)


def _security(operation: dict[str, Any], clients_need_tokens: bool) -> None:
    requirements = operation.get("security")
    if not requirements:
        return
    unique = [dict(r) for i, r in enumerate(requirements) if r not in requirements[:i]]  # a scheme once
    client_scheme = CLIENT_SCHEME.scheme_name
    if not clients_need_tokens and any(client_scheme in r for r in unique):
        unique.append({})  # the token may be left out: OpenAPI's "no authentication" alternative
    operation["security"] = unique


def _examples(operation: dict[str, Any]) -> None:
    op_id = operation["operationId"]
    if op_id in REQUEST_EXAMPLES:
        operation["requestBody"]["content"][JSON]["examples"] = copy.deepcopy(REQUEST_EXAMPLES[op_id])
    for (example_op, code), examples in RESPONSE_EXAMPLES.items():
        if example_op == op_id:
            operation["responses"][code]["content"][JSON]["examples"] = copy.deepcopy(examples)


REQUEST_ID = {
    "description": f"The request's id: the client's own `{REQUEST_ID_HEADER}` when it is a plain token (1-128 "
    "characters), else a new one. Every log line of the request, and of the job it creates, carries it.",
    "schema": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN.pattern}$"},
}


def _request_id_header(operation: dict[str, Any]) -> None:
    """Every answer carries the request id (service.api.request_ids wraps the whole application)."""
    for response in operation.get("responses", {}).values():
        response.setdefault("headers", {})[REQUEST_ID_HEADER] = {"$ref": "#/components/headers/RequestId"}


def refine(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """FastAPI's document, made exact where it cannot know: file bodies, optional tokens, examples, the request id
    header."""
    document.setdefault("components", {}).setdefault("headers", {})["RequestId"] = REQUEST_ID
    for operation in _operations(document):
        _describe_bodies(operation)
        _security(operation, clients_need_tokens=bool(settings.client_tokens))
        _examples(operation)
        _request_id_header(operation)
    return document


# -------------------------------------------------------------------------------------------------------------- docs

ASSETS = "/docs-assets"  # Swagger UI and ReDoc, as fastapi-offline bundles them (the versions FastAPI's CDN links name)


def install(app: FastAPI, settings: Settings) -> None:
    """The document (built once, on first request) and the offline /docs and /redoc pages. Create the app with
    `docs_url=None, redoc_url=None, generate_unique_id_function=operation_id, openapi_tags=TAGS`."""

    build = app.openapi  # FastAPI's own (or what an earlier install put in its place): refined once, then cached

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(build(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS}/{name}"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            oauth2_redirect_url=None,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
