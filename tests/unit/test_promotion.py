"""The card gate on a condensation's promotion (jobs.promotion): which rows withhold it, and what the job says."""

from __future__ import annotations

from jobs.cards import card_summary
from jobs.promotion import promotion_warning, withheld_reason
from learngene.quality.card import CardRow, QualityCard


def card(*pairs: tuple[float, float]) -> QualityCard:
    rows = [
        CardRow(
            depth=d + 1,
            embed_dim=32,
            num_heads=1,
            params=1000,
            accuracy=wave,
            baseline_accuracy=timm,
            fit_steps=5,
            seconds=0.1,
        )
        for d, (wave, timm) in enumerate(pairs)
    ]
    return QualityCard.model_construct(rows=rows, seconds=1.0)


def test_the_gate_opens_only_when_wave_is_at_or_above_timm_s_init_on_every_row():
    winning = card_summary(1, card((0.80, 0.70), (0.70, 0.70)))  # a tie is "at or above"
    assert winning["below_baseline"] == [] and withheld_reason("card", winning) is None
    losing = card_summary(1, card((0.80, 0.70), (0.671, 0.721), (0.60, 0.65)))
    assert [r["depth"] for r in losing["below_baseline"]] == [2, 3]
    reason = withheld_reason("card", losing)
    assert reason == (
        "WAVE is below timm's init on 2 of 3 card rows (depth 2 x width 32: 0.671 < 0.721, "
        "depth 3 x width 32: 0.600 < 0.650)"
    )
    assert withheld_reason("always", losing) is None  # today's behaviour, on request


def test_no_card_or_a_failed_one_withholds_the_promotion_and_the_warning_says_how_to_move_it_by_hand():
    assert "no quality card was measured" in withheld_reason("card", None)
    failed = {"error": {"type": "DataUnavailable", "message": "..."}}
    assert withheld_reason("card", failed) == "its quality card could not be measured (DataUnavailable)"
    warning = promotion_warning("prod", "because")
    assert warning["code"] == "promotion_withheld"
    assert warning["message"].startswith("published, but 'prod' was not moved to it: because; move it by hand")
