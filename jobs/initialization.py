"""One initialization request, from its inputs to a checkpoint: shared by the workers and `learngene init`.

Loading the inputs is separate from running, so that a worker can look its result up in the cache (the key needs the
calibration data's digest) before spending any compute. No queue code here: the CLI runs this in-process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.contracts import InitializationRequest
from learngene.data import DEFAULT_LIMITS, DecodeLimits, ImageData, resolve_file
from learngene.errors import DataRefError, IntegrityError
from learngene.fit_settings import Calibration
from learngene.formats.template_set import TemplateSet
from learngene.methods import AncestorWeights, get_method
from learngene.pipeline import InitResult, initialize, load_calibration
from learngene.quality.card import QualityCard
from learngene.train.loop import ProgressFn, StopFn
from templates_store import ResolvedRef, TemplateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitInputs:
    """What an initialization reads besides its request: the pinned template set, the ancestor, the data."""

    template: ResolvedRef | None
    template_set: TemplateSet | None
    ancestor: AncestorWeights | None
    data: ImageData | None
    eval_data: ImageData | None = None
    card: QualityCard | None = None  # the template set's quality card, when it has a readable one

    def cache_key(self, request: InitializationRequest, client: str | None = None) -> str:
        """Identical requests give identical checkpoints: same method, template version or ancestor weights, spec,
        calibration data and fit settings (seed included). Per client (when client tokens are configured): a
        cached answer would tell one client that another ran the same request, and how long it took."""
        payload = {
            "method": request.method,
            "template_digest": self.template.digest if self.template else None,
            "ancestor_sha256": self.ancestor.sha256 if self.ancestor else None,
            "spec": request.spec().model_dump(mode="json", exclude_none=True),
            "calibration": None if request.calibration is None else request.calibration.model_dump(),
            "data_digest": self.data.digest() if self.data else None,
            "eval_data_digest": self.eval_data.digest() if self.eval_data else None,
            # A refreshed card changes the checkpoint's model card and warnings, so it is a new result.
            "card_digest": hashlib.sha256(self.card.model_dump_json().encode()).hexdigest() if self.card else None,
            "fit": request.fit.model_dump(),
        }
        if client is not None:  # keys of deployments without client tokens stay as they were
            payload["client"] = client
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_inputs(
    request: InitializationRequest,
    template: ResolvedRef | None,
    store: TemplateStore,
    data_roots: Sequence[str | Path] | None,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    should_stop: StopFn | None = None,
) -> InitInputs:
    """Read (and verify) everything `request` names. `template` is the reference pinned when it was accepted.
    Reading the calibration data stops early (`Stopped`) when `should_stop` says so."""
    template_set = store.load(template) if template is not None else None
    ancestor = None
    if request.ancestor is not None:
        a = request.ancestor
        ancestor = AncestorWeights.load(a.model, resolve_file(a.checkpoint, data_roots), a.spec().overrides())
    data = eval_data = None
    calibration = request.calibration
    if calibration is not None and get_method(request.method).fits_scalers:
        load = functools.partial(
            load_calibration, request.spec(), normalization=template_set.config.normalization, seed=request.fit.seed,
            allowed_roots=data_roots, limits=limits, should_stop=should_stop,
        )  # fmt: skip
        data = load(calibration)
        if calibration.eval_uri is not None:
            eval_data = load(Calibration(uri=calibration.eval_uri, max_samples=calibration.max_samples))
            if eval_data.labels is None:
                raise DataRefError(calibration.eval_uri, "held-out data must be labelled")
    card = current_card(store, template) if template is not None else None
    return InitInputs(template, template_set, ancestor, data, eval_data, card)


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
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> InitResult:
    return initialize(
        request.spec(),
        out,
        method=request.method,
        template_set=inputs.template_set,
        ancestor=inputs.ancestor,
        data=inputs.data,
        eval_data=inputs.eval_data,
        fit=request.fit,
        device=device,
        progress=progress,
        should_stop=should_stop,
        template_digest=inputs.template.digest if inputs.template else None,
        card=inputs.card,
    )
