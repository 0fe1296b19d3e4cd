#!/usr/bin/env bash
# Reproduce the bundled default model (data/model.pt) from scratch on a 2-core CPU (about an hour).
#   bash scripts/train_default_model.sh [AN4_DIR] [FSDD_DIR]
# AN4_DIR is CMU's an4 folder (raw or SPHERE layout), FSDD_DIR the Free Spoken Digit Dataset.
set -euo pipefail
an4=${1:-../shared/corpora/an4}
fsdd=${2:-../shared/corpora/fsdd}
asr prepare an4 "$an4" --out runs/data/an4
asr prepare fsdd "$fsdd" --out runs/data/fsdd
asr train --config configs/default.yaml --out runs/default
asr export runs/default/best.pt data/model.pt
asr evaluate runs/data/an4/dev.jsonl --model data/model.pt
asr evaluate runs/data/fsdd/dev.jsonl --model data/model.pt
