#!/usr/bin/env bash
# The GPU checks, in one command for a machine with a CUDA GPU: the CUDA tests (they skip without one), then
# training throughput and transcription speed on the GPU against the CPU, on the test AN4 sample.
#   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -m pytest -q -rs tests/test_gpu.py tests/test_train_harness.py
data=$(mktemp -d)
python -m cli prepare an4 tests/data/an4 --out "$data/an4" --dev-speakers 1 >/dev/null
python benchmarks/benchmark.py --manifest "$data/an4/train.jsonl" --device cpu --batches 4 --repeats 3
python benchmarks/benchmark.py --manifest "$data/an4/train.jsonl" --device cuda --precision fp16 --batches 4 --repeats 3
