"""Quality cards, in this process: the default ladder, a card measured deterministically on held-out images, and the
card the bundled demo set ships (storage on both backends: tests.support.store_contract)."""

from __future__ import annotations

from learngene.fit_settings import FitSettings
from learngene.quality.card import CardConfig, compute_card, default_depths, load_card_data
from templates_store import TemplateStore
from tests.support.data import FMNIST
from tests.support.models import random_template_set, tiny_spec


def test_default_ladder_has_three_depths_and_two_widths():
    assert default_depths(6) == (3, 6, 12) and default_depths(2) == (1, 2, 4) and default_depths(1) == (1, 2, 3)


def test_a_card_is_deterministic_and_measured_on_images_it_did_not_fit_on():
    template_set = random_template_set(tiny_spec(depth=2))
    template_set.lineage.data_uri = f"idx://{FMNIST}"  # no evaluation data: a held-out sample of the data itself
    config = CardConfig(depths=(1, 2, 3), fit=FitSettings(steps=3, batch_size=16), train_samples=96, eval_samples=64)
    data = load_card_data(template_set, config)
    assert (len(data.train), len(data.held_out)) == (96, 64) and "disjoint" in data.description
    seen = {bytes(image.numpy()) for image in data.train.images}
    assert not any(bytes(image.numpy()) in seen for image in data.held_out.images)
    steps = []
    first, again = (
        compute_card(template_set, data, digest="a" * 64, config=config, progress=steps.append) for _ in range(2)
    )
    strip = lambda card: [r.model_dump(exclude={"seconds"}) for r in card.rows]  # noqa: E731
    assert strip(first) == strip(again) and len(first.rows) == 6
    assert steps[-1].step == steps[-1].total_steps == 2 * 6 * 3
    assert first.row_for(3, 64).num_heads == 2 and first.row_for(3, 48) is None
    assert first.depth_range == (1, 3) and first.width_range == (32, 64)


def test_the_bundled_demo_set_ships_its_card(tmp_path):
    fresh = TemplateStore.local(tmp_path / "fresh")
    card = fresh.card("demo@prod")
    assert card is not None and card.template_set == "demo@1" and card.digest == fresh.resolve("demo@prod").digest
    assert len({r.depth for r in card.rows}) >= 3 and len({r.embed_dim for r in card.rows}) >= 2
    assert fresh.card_revisions("demo@1")[0][0] == 1  # stored, checksummed, as any card
    assert fresh.list("demo")[0].card.best_accuracy == card.best.accuracy


def test_the_model_card_says_every_width_is_served(tmp_path):
    """The README of a set's card: any depth and width (a width between multiples is selected from the next), with
    the sizes the card measured; not "widths 64-128 (multiples of 64)"."""
    from jobs.card_views import card_readme

    store = TemplateStore.local(tmp_path / "store")
    text = card_readme(store.card("demo@prod"), store.manifest(store.resolve("demo@prod")))
    assert "any depth and width" in text and "selected from the next multiple" in text
    assert "measured depths 3-12 and widths 64-128" in text and "(multiples of" not in text
