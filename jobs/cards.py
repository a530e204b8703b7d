"""Quality cards in the service: measured for a stored version with the service's budget, on its own data.

The data is the version's lineage (`data_uri`, `eval_data_uri`), copied from object storage when it lives there and
confined to the data roots like any request's data; right after a condensation, the job's own local copies are used.
"""

from __future__ import annotations

from pathlib import Path

from jobs.promotion import rows_below_baseline
from jobs.remote_data import localize
from jobs.settings import Settings
from learngene.data import DataAccess
from learngene.fit_settings import FitSettings
from learngene.formats.template_set import TemplateSet
from learngene.quality.card import CardConfig, QualityCard, compute_card, load_card_data
from learngene.train.loop import ProgressFn, StopFn, pick_device
from templates_store import ResolvedRef


def card_config(settings: Settings) -> CardConfig:
    fit = FitSettings() if settings.card_fit_steps is None else FitSettings(steps=settings.card_fit_steps)
    return CardConfig(fit=fit, train_samples=settings.card_train_samples, eval_samples=settings.card_eval_samples)


def measure_card(
    template_set: TemplateSet,
    resolved: ResolvedRef,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> QualityCard:
    """The card of `template_set` (the version `resolved`), on its lineage's data: local copies of `s3://` data are
    read (made now, or found in this worker's cache), the card names the references as the lineage records them."""
    lineage = template_set.lineage
    local: dict[str, str] = {}
    roots: list[Path] = []
    for uri in filter(None, (lineage.data_uri, lineage.eval_data_uri)):
        local[uri], found = localize(uri, settings, should_stop)
        roots = list(dict.fromkeys([*roots, *found]))
    config = card_config(settings)
    data = load_card_data(
        template_set, config, local=local, access=DataAccess(roots, settings.limits.decode(), should_stop)
    )
    return compute_card(
        template_set,
        data,
        digest=resolved.digest,
        config=config,
        device=pick_device(settings.device),
        progress=progress,
        should_stop=should_stop,
    )


def card_summary(revision: int, card: QualityCard) -> dict:
    """What a job's result says about the card it stored."""
    return {"revision": revision, "rows": len(card.rows), "best_accuracy": card.best.accuracy,
            "worst_accuracy": card.worst.accuracy, "seconds": round(card.seconds, 3),
            "below_baseline": rows_below_baseline(card)}  # fmt: skip
