"""torch's dynamic int8 quantization on the torch path: WER and acoustic-model time against fp32.

    python benchmarks/torch_int8.py [--manifest runs/data/an4/dev.jsonl] [--model data/model.pt] [--repeats 5]

Quantizes the model's LSTMs and output layer with ``torch.ao.quantization.quantize_dynamic`` (int8 weights,
activations quantized per batch), scores both models greedy and with beam search + the model's LM, then times
``asr.evaluate.model_outputs`` (reading, features and acoustic model; no decoding) for each in turn and prints
the medians. Not shipped (docs/experiments.md): greedy WER rose 0.39 points, over the 0.2 allowed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

from asr.checkpoint import DEFAULT_MODEL
from asr.evaluate import evaluate_manifest, model_outputs
from asr.recognizer import Recognizer, load_model


def quantized(recognizer: Recognizer) -> Recognizer:
    model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(recognizer.model), {torch.nn.LSTM, torch.nn.Linear},
                                                   dtype=torch.qint8)
    return dataclasses.replace(recognizer, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="runs/data/an4/dev.jsonl")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fp32 = load_model(args.model, "cpu")
    models = {"fp32": fp32, "int8": quantized(fp32)}
    for name, recognizer in models.items():
        for kind in ("greedy", "beam"):
            rates = evaluate_manifest(recognizer, args.manifest, recognizer.decoder(kind))
            print(f"{name} {kind:6}  WER {100 * rates.wer:.2f}%  CER {100 * rates.cer:.2f}%", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, recognizer in models.items():
            start = time.perf_counter()
            model_outputs(recognizer, [args.manifest])
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"model outputs, medians of {args.repeats}: fp32 {medians['fp32']:.2f} s, int8 {medians['int8']:.2f} s "
          f"({medians['fp32'] / medians['int8']:.2f}x)")


if __name__ == "__main__":
    main()
