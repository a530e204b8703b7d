"""One initialization request, from its inputs to a checkpoint: shared by the workers and `learngene init`.

Loading the inputs is separate from running, so that a worker can look its result up in the cache (the key needs the
calibration data's digest) before spending any compute. No queue code here: the CLI runs this in-process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import torch

from jobs.contracts import InitializationRequest
from learngene.data import DataAccess, resolve_file
from learngene.errors import DataRefError, IntegrityError, UserError
from learngene.fit_settings import Calibration
from learngene.methods import AncestorWeights, get_method
from learngene.pipeline import InitInputs, InitResult, initialize, load_calibration
from learngene.quality.card import QualityCard
from learngene.train.loop import Hooks
from templates_store import ResolvedRef, TemplateStore

log = logging.getLogger(__name__)


def cache_key(request: InitializationRequest, inputs: InitInputs, client: str | None = None) -> str:
    """Identical requests give identical checkpoints: same method, template version or ancestor weights, spec,
    calibration data and fit settings (seed included). Per client (when client tokens are configured): a cached
    answer would tell one client that another ran the same request, and how long it took."""
    payload = {
        "method": request.method,
        "template_digest": inputs.template_digest,
        "ancestor_sha256": inputs.ancestor.sha256 if inputs.ancestor else None,
        "spec": request.spec().model_dump(mode="json", exclude_none=True),
        "calibration": None if request.calibration is None else request.calibration.model_dump(),
        "data_digest": inputs.data.digest() if inputs.data else None,
        "eval_data_digest": inputs.eval_data.digest() if inputs.eval_data else None,
        # A refreshed card changes the checkpoint's model card and warnings, so it is a new result.
        "card_digest": hashlib.sha256(inputs.card.model_dump_json().encode()).hexdigest() if inputs.card else None,
        "fit": request.fit.model_dump(),
    }
    if client is not None:  # keys of deployments without client tokens stay as they were
        payload["client"] = client
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_inputs(
    request: InitializationRequest, template: ResolvedRef | None, store: TemplateStore, access: DataAccess
) -> InitInputs:
    """Read (and verify) everything `request` names, from under `access`'s roots. `template` is the reference
    pinned when it was accepted. Reading the calibration data stops early (`Stopped`) when `access` says so."""
    template_set = store.load(template) if template is not None else None
    ancestor = None
    if request.ancestor is not None:
        a = request.ancestor
        checkpoint = resolve_file(a.checkpoint, access.allowed_roots)
        ancestor = AncestorWeights.load(a.model, checkpoint, a.spec().overrides())
    data = eval_data = None
    calibration = request.calibration
    if calibration is not None and get_method(request.method).fits_scalers:
        if template_set is None:  # admission refuses such a request; a record written by hand may still hold one
            raise UserError("calibration data fits a template set's descendant: the request names no template_set")
        load = functools.partial(
            load_calibration,
            request.spec(),
            normalization=template_set.config.normalization,
            seed=request.fit.seed,
            access=access,
        )
        data = load(calibration)
        if calibration.eval_uri is not None:
            eval_data = load(Calibration(uri=calibration.eval_uri, max_samples=calibration.max_samples))
            if eval_data.labels is None:
                raise DataRefError(calibration.eval_uri, "held-out data must be labelled")
    card = current_card(store, template) if template is not None else None
    digest = template.digest if template is not None else None
    return InitInputs(template_set, digest, card, ancestor, data, eval_data)


def current_card(store: TemplateStore, template: ResolvedRef) -> QualityCard | None:
    """The version's quality card; a damaged one is reported to the operator and treated as none (the request does
    not depend on it: it only adds range warnings and the model card's row)."""
    try:
        return store.card(template)
    except IntegrityError as exc:
        log.warning("quality card of %s is unreadable, ignored: %s", template, exc)
        return None


def run_request(
    request: InitializationRequest,
    inputs: InitInputs,
    out: Path,
    *,
    device: torch.device | str,
    hooks: Hooks = Hooks(),
) -> InitResult:
    return initialize(
        request.spec(), out, method=request.method, inputs=inputs, fit=request.fit, device=device, hooks=hooks
    )
