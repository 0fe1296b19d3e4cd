#!/usr/bin/env bash
# Reproduce the bundled default model (data/model.pt and its LM) from scratch on a 2-core CPU.
#   bash scripts/train_default_model.sh [AN4_DIR] [FSDD_DIR]
# AN4_DIR is CMU's an4 folder (raw or SPHERE layout), FSDD_DIR the Free Spoken Digit Dataset.
set -euo pipefail
an4=${1:-../shared/corpora/an4}
fsdd=${2:-../shared/corpora/fsdd}
data=runs/data
asr prepare an4 "$an4" --out $data/an4
asr prepare fsdd "$fsdd" --out $data/fsdd-all --dev-speakers 0  # all five speakers train
# AN4's training speakers' digits as clips of their own, cut where a first model trained here aligns them
# (configs/aligner.yaml: the recipe without those clips, at most 30 minutes), so nothing shipped is needed.
asr train --config configs/aligner.yaml --out runs/aligner >/dev/null
asr cut-words $data/an4/train.jsonl --out $data/an4-digits/train --model runs/aligner/best.pt \
  --word zero --word oh --word one --word two --word three --word four --word five --word six --word seven \
  --word eight --word nine
# `asr train` names the checkpoint to ship: best.pt, or average.pt when the average of the best epochs scores lower.
model=$(asr train --config configs/default.yaml --out runs/default | sed -n 's/^best checkpoint: //p')
asr export "$model" data/model.pt
# A 5-gram LM of the training transcripts (counted five times, to weigh them above the word lists) and of
# census names and English words spelled letter by letter (data/lm/README.md), its weights tuned on the dev speakers.
asr lm build $data/an4/train.jsonl $data/fsdd-all/train.jsonl --text-weight 5 \
  --spell data/lm/census_names.txt --spell data/lm/english_words.txt --order 5 --out runs/default/lm.arpa
asr tune-lm $data/an4/dev.jsonl --lm runs/default/lm.arpa --model data/model.pt --beam-width 100 \
  --alphas 0.1,0.25,0.4,0.5,0.75,1 --betas 0,0.5,1,2,3
echo "an4/dev greedy: $(asr evaluate $data/an4/dev.jsonl --decoder greedy)"
echo "an4/dev beam+LM: $(asr evaluate $data/an4/dev.jsonl)"
