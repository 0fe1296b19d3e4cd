"""Speed of training, of the recurrent layers, and of transcription on this machine.

    python benchmarks/benchmark.py [--manifest runs/data/an4/dev.jsonl] [--config configs/default.yaml] [--precision bf16]

Prints, each as the median of --repeats runs:
- training throughput: seconds of audio trained on per second (forward, CTC loss,
  backward, optimiser step on real batches), at fp32 and at --precision (the config's by default);
- the LSTM stack's achieved GFLOP/s, forward and backward, fp32 and bf16;
- the real-time factor of `transcribe_files` with the bundled model over the manifest's
  audio, loading the model and decoding the files included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice
from pathlib import Path

import torch

from asr.checkpoint import DEFAULT_MODEL
from asr.config import load_config
from asr.data import DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.features import LogMelFrontend
from asr.model import AcousticModel
from asr.recognizer import load_model
from asr.text import Vocabulary
from asr.transcribe import transcribe_files


def median_of(runs: int, measure) -> float:
    return statistics.median(measure() for _ in range(runs))


def training_throughput(config, batches, dtype: torch.dtype | None) -> float:
    torch.manual_seed(0)
    vocabulary = Vocabulary()
    frontend = LogMelFrontend(config.features).train()
    model = AcousticModel(config.model, config.features.n_mels, len(vocabulary)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctc = torch.nn.CTCLoss(zero_infinity=True, reduction="sum")
    started, audio = time.perf_counter(), 0.0
    for batch in batches:
        features, lengths = frontend(batch.waveforms, batch.lengths)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            log_probs, frames = model(features, lengths)
        loss = ctc(log_probs.transpose(0, 1), batch.targets, frames, batch.target_lengths) / len(batch.lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        audio += batch.lengths.sum().item() / config.features.sample_rate
    return audio / (time.perf_counter() - started)


def lstm_gflops(config, dtype: torch.dtype | None, batch: int = 16, frames: int = 300) -> float:
    """Achieved GFLOP/s of the recurrent stack: 8·H·(input+H) FLOPs per frame and direction forward, twice that backward."""
    model = AcousticModel(config.model, config.features.n_mels, 29)
    hidden = config.model.rnn_hidden
    inputs = [model.conv.output_size] + [2 * hidden] * (config.model.rnn_layers - 1)
    flops = sum(3 * 2 * 8 * hidden * (size + hidden) for size in inputs) * batch * frames
    x = torch.randn(batch, frames, model.conv.output_size, requires_grad=True)
    lengths = torch.full((batch,), frames)

    def run() -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = x
            for rnn in model.rnns:
                y = rnn(y, lengths)
        y.float().sum().backward()
        return flops / (time.perf_counter() - started) / 1e9

    run()  # warm-up
    return median_of(3, run)


def real_time_factor(model_path: Path, paths: list[Path], audio_seconds: float) -> float:
    started = time.perf_counter()
    recognizer = load_model(model_path, "cpu")
    for _ in transcribe_files(recognizer, paths):
        pass
    return (time.perf_counter() - started) / audio_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="runs/data/an4/dev.jsonl")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp16"], help="autocast to compare with fp32 (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    config = load_config(args.config)
    utterances = read_manifest(args.manifest)
    dataset = SpeechDataset(utterances, Vocabulary(), source=args.manifest)
    sampler = DurationBatchSampler([u.duration for u in utterances], config.data.batch_seconds, seed=0)
    batches = [collate([dataset[i] for i in indices]) for indices in islice(sampler, args.batches)]
    precision_name = args.precision or config.training.precision
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision_name)

    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, {len(batches)} batches of "
          f"{config.data.batch_seconds:.0f} s from {args.manifest}")
    fp32 = median_of(args.repeats, lambda: training_throughput(config, batches, None))
    print(f"training throughput, fp32: {fp32:.1f} s of audio per second")
    if precision is not None:
        mixed = median_of(args.repeats, lambda: training_throughput(config, batches, precision))
        print(f"training throughput, {precision_name} autocast: {mixed:.1f} s of audio per second "
              f"({mixed / fp32:.2f}x fp32)")
    print(f"LSTM stack, forward + backward: {lstm_gflops(config, None):.1f} GFLOP/s fp32, "
          f"{lstm_gflops(config, torch.bfloat16):.1f} GFLOP/s bf16 autocast")
    paths = [u.audio_filepath for u in utterances]
    audio_seconds = sum(u.duration for u in utterances)
    rtf = median_of(args.repeats, lambda: real_time_factor(Path(args.model), paths, audio_seconds))
    print(f"transcription with {args.model}: real-time factor {rtf:.4f} "
          f"({1 / rtf:.0f}x faster than real time, {len(paths)} files, {audio_seconds / 60:.1f} min of audio)")


if __name__ == "__main__":
    main()
