#!/usr/bin/env bash
# Rebuild the bundled demo template set (learngene/assets/demo) from nothing, with the project's own commands:
#   1. train the ancestor, a 6-layer 128-wide ViT, on FashionMNIST (28x28 grey, patch 7);
#   2. condense it into WAVE templates of size 64 through a 6-layer 64-wide auxiliary model;
#   3. measure its quality card (the set's default fitting at depths 3, 6, 12 and widths 64, 128, next to timm's
#      init with the same budget; about 5 minutes) and ship it beside the set as card.json.
# About 35 minutes on 2 CPU cores; deterministic for a given machine and torch version. ANCESTOR_STEPS,
# CONDENSE_STEPS, CARD_STEPS and CARD_SAMPLES shorten it (the tests run it that way, on a smaller DATA, into another
# OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${DATA:-../shared/data/FashionMNIST}
WORK=${WORK:-build/demo}
OUT=${OUT:-learngene/assets/demo}
ANCESTOR_STEPS=${ANCESTOR_STEPS:-6000}
CONDENSE_STEPS=${CONDENSE_STEPS:-4000}
CARD_STEPS=${CARD_STEPS:-}  # unset: the set's default fitting
CARD_SAMPLES=${CARD_SAMPLES:-}  # images each card size fits on and is measured on; unset: the service's defaults
mkdir -p "$WORK"

SHAPE=(img_size=28 patch_size=7 in_chans=1 num_classes=10)
ANCESTOR=("${SHAPE[@]}" embed_dim=128 num_heads=2 depth=6)
AUX=("${SHAPE[@]}" embed_dim=64 num_heads=1 depth=6)
flags() { local flag=$1; shift; for kv; do printf -- '%s %s ' "$flag" "$kv"; done; }  # values hold no spaces

if [ ! -f "$WORK/ancestor.safetensors" ]; then
  # shellcheck disable=SC2046
  "$BIN/learngene" train --model vit_tiny_patch16_224 $(flags --set "${ANCESTOR[@]}") \
    --data "idx://$DATA" --eval-data "idx://$DATA?split=test" \
    --steps "$ANCESTOR_STEPS" --batch-size 128 --lr 1e-3 --warmup 300 --seed 0 \
    --out "$WORK/ancestor.safetensors" | tee "$WORK/ancestor.json"
fi

rm -rf "$OUT.new"
# shellcheck disable=SC2046
"$BIN/learngene" condense --name demo \
  --ancestor-model vit_tiny_patch16_224 --ancestor "$WORK/ancestor.safetensors" $(flags --ancestor-set "${ANCESTOR[@]}") \
  --aux-model vit_tiny_patch16_224 $(flags --aux-set "${AUX[@]}") \
  --data "idx://$DATA" --eval-data "idx://$DATA?split=test" \
  --steps "$CONDENSE_STEPS" --batch-size 128 --lr 1e-3 --warmup 200 --seed 0 --recipe plain \
  --checkpoint-dir "$WORK/condense-state" \
  --out "$OUT.new" | tee "$WORK/condense.json"

# The card is measured on the set exactly as a fresh store publishes it (demo@1, the same manifest digest): here a
# scratch store holding only the new set.
rm -rf "$WORK/card-store" "$WORK/card"
LEARNGENE_STORE="$WORK/card-store" "$BIN/learngene" templates publish "$OUT.new" --name demo
LEARNGENE_STORE="$WORK/card-store" "$BIN/learngene" templates card demo@1 --refresh --device cpu \
  ${CARD_STEPS:+--steps "$CARD_STEPS"} ${CARD_SAMPLES:+--train-samples "$CARD_SAMPLES" --eval-samples "$CARD_SAMPLES"} \
  --out "$WORK/card"
cp "$WORK/card/card.json" "$OUT.new/card.json"
rm -rf "$OUT" && mv "$OUT.new" "$OUT"
du -sh "$OUT"
