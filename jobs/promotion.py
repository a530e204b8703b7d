"""Whether a condensation's `promote` moves its alias (issue 26, "promotion gated on the card").

With `promote_if="card"` (the default) the alias moves only once the new version's quality card is measured and WAVE
is at or above timm's initialization on every row of it; otherwise the set stays published but unpromoted, and the
job's result carries a `promotion_withheld` warning naming the rows. `"always"` moves it on publication, as before.
Pure: the runner measures and moves, this decides.
"""

from __future__ import annotations

from typing import Any, Literal

from learngene.quality.card import QualityCard

PromoteIf = Literal["card", "always"]


def rows_below_baseline(card: QualityCard) -> list[dict[str, Any]]:
    """The card's rows where WAVE's accuracy is below timm's init (what a `card` gate withholds a promotion for)."""
    return [
        {
            "depth": r.depth,
            "embed_dim": r.embed_dim,
            "num_heads": r.num_heads,
            "accuracy": r.accuracy,
            "baseline_accuracy": r.baseline_accuracy,
        }
        for r in card.rows
        if r.accuracy < r.baseline_accuracy
    ]


def withheld_reason(promote_if: PromoteIf, card: dict[str, Any] | None) -> str | None:
    """Why the alias must not move, given the job's card summary (`jobs.cards.card_summary`, or an `error`, or None
    when no card was measured); None when it may."""
    if promote_if == "always":
        return None
    if card is None:
        return "no quality card was measured (this worker has card_on_publish off)"
    if "error" in card:
        return f"its quality card could not be measured ({card['error']['type']})"
    below = card.get("below_baseline", [])
    if below:
        rows = ", ".join(
            f"depth {r['depth']} x width {r['embed_dim']}: {r['accuracy']:.3f} < {r['baseline_accuracy']:.3f}"
            for r in below
        )
        return f"WAVE is below timm's init on {len(below)} of {card['rows']} card rows ({rows})"
    return None


def promotion_warning(alias: str, reason: str) -> dict[str, str]:
    """The result's warning for a withheld promotion (the shape of `learngene.quality.caveats.Caveat`)."""
    return {
        "code": "promotion_withheld",
        "message": f"published, but {alias!r} was not moved to it: {reason}; move it by hand "
        "(PUT /v1/admin/template-sets/{name}/aliases/{alias}) if you accept that",
    }
