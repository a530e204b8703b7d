"""What the store shows of its versions: one line per version for listings, an alias's record, a card's summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from learngene.formats.template_set import Manifest
from learngene.quality.card import CardDomain, CardRow, QualityCard
from templates_store.refs import ResolvedRef


class AliasRecord(BaseModel):
    version: int
    history: list[int]  # every target the alias has had, oldest first; the last is the current one
    updated: str


class CardSummary(BaseModel):
    """A version's current quality card in one line: its held-out accuracy range over the ladder of sizes."""

    revision: int
    created: str
    best_accuracy: float
    worst_accuracy: float
    sizes: int


class Prediction(BaseModel):
    """What a version's quality card predicts for a requested size: the accuracy of its row nearest that size."""

    accuracy: float = Field(description="held-out accuracy of WAVE at the card row used")
    row: CardRow = Field(description="the card row nearest the size asked for (in log depth and log width)")


class VersionInfo(BaseModel):
    name: str
    version: int
    digest: str
    method: str
    created: str
    aliases: list[str]
    metrics: dict[str, float]
    parameters: dict[str, int]
    bytes: int
    domain: CardDomain
    card: CardSummary | None = None
    prediction: Prediction | None = Field(
        default=None, description="with a size asked for (depth, embed_dim): the card's prediction for it"
    )


def card_summary(revision: int, card: QualityCard) -> CardSummary:
    return CardSummary(
        revision=revision,
        created=card.created,
        best_accuracy=card.best.accuracy,
        worst_accuracy=card.worst.accuracy,
        sizes=len(card.rows),
    )


@dataclass(frozen=True)
class VersionFiles:
    """A version as the folder a client downloads: the files its manifest names (file name -> local path), and
    the small ones as bytes: `manifest.json` as stored and `model.sig` (absent for a version published before
    signing, or by an unsigned store)."""

    ref: ResolvedRef
    manifest: Manifest
    paths: dict[str, Path]
    blobs: dict[str, bytes]
