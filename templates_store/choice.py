"""Choosing a template set for a domain and a size: the versions condensed for the inputs asked (image size,
channels, classes), ranked by what their quality cards predict at the size asked.

A set condensed on other inputs still serves them (its caveats say how it adapts), but its card says nothing about
them: the choice lists only the sets of the domain asked, and a card's prediction is the accuracy of its row
nearest the requested size (distance in log depth plus log width: a card measures a ladder of sizes, and accuracy
moves with their ratios)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from learngene.errors import UserError
from learngene.quality.card import CardDomain, QualityCard
from templates_store.store import TemplateStore
from templates_store.views import Prediction, VersionInfo


@dataclass(frozen=True)
class Wanted:
    """What a user asks of a template set; None: any."""

    img_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    depth: int | None = None
    embed_dim: int | None = None

    def __post_init__(self) -> None:
        if (self.depth is None) != (self.embed_dim is None):
            raise UserError("give depth and embed_dim together (the size to rank for)")

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.depth, self.embed_dim) if self.depth and self.embed_dim else None

    def matches(self, domain: CardDomain) -> bool:
        asked = {"img_size": (self.img_size, domain.img_size[0]), "in_chans": (self.in_chans, domain.in_chans),
                 "num_classes": (self.num_classes, domain.num_classes)}  # fmt: skip
        square = domain.img_size[0] == domain.img_size[1]
        return all(want is None or want == have for want, have in asked.values()) and (square or not self.img_size)


def predict(card: QualityCard, depth: int, embed_dim: int) -> Prediction:
    def distance(row) -> float:
        return abs(math.log(depth / row.depth)) + abs(math.log(embed_dim / row.embed_dim))

    row = min(card.rows, key=lambda r: (distance(r), -r.accuracy))
    return Prediction(accuracy=row.accuracy, row=row)


def choose(store: TemplateStore, wanted: Wanted, name: str | None = None) -> list[VersionInfo]:
    """The versions of the domain asked; with a size, each with its card's prediction, the best first (versions
    without a card last), else in (name, version) order."""
    chosen = [v for v in store.list(name) if wanted.matches(v.domain)]
    if wanted.size is None:
        return chosen
    for version in chosen:
        card = store.card(f"{version.name}@{version.version}") if version.card else None
        version.prediction = None if card is None else predict(card, *wanted.size)
    return sorted(chosen, key=rank)


def rank(version: VersionInfo) -> tuple[int, float, str, int]:
    """The order of a ranked choice: predicted accuracy, best first, versions without a prediction last; then by
    name and version. A whole key, so that a page can resume after the last version it showed."""
    if version.prediction is None:
        return (1, 0.0, version.name, version.version)
    return (0, -version.prediction.accuracy, version.name, version.version)
