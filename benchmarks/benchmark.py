"""Speed of training, of the recurrent layers, and of transcription on this machine.

    python benchmarks/benchmark.py [--manifest runs/data/an4/dev.jsonl] [--config configs/default.yaml] [--precision bf16]
                                   [--device cuda]

Prints, each as the median of --repeats runs:
- training throughput: seconds of audio trained on per second through `asr train`'s own step
  (asr.train.train_step: forward, CTC, backward, clipping, AdamW) on real batches, at fp32 and at
  --precision (the config's by default);
- the LSTM stack's achieved GFLOP/s, forward and backward, fp32 and bf16;
- the real-time factor of `transcribe_files` with the bundled model over the manifest's
  audio, loading the model and decoding the files included.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from asr.checkpoint import DEFAULT_MODEL
from asr.config import Config, load_config
from asr.data import Batch, DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.model import AcousticModel
from asr.recognizer import choose_device, load_model
from asr.text import Vocabulary
from asr.train import new_state, new_trainer, train_step
from asr.train_data import training_prior
from asr.transcribe import transcribe_files


def benchmark_batches(config_path: str, manifest: str, count: int, device: torch.device) -> tuple[Config, list[Batch]]:
    """The config, with its feature prior measured on the manifest's audio as asr train measures its training
    set's, and the first ``count`` batches the training sampler draws from the manifest."""
    config = load_config(config_path)
    utterances = read_manifest(manifest)
    dataset = SpeechDataset(utterances, Vocabulary(), source=manifest)
    config = with_prior(config, dataset, device)
    sampler = DurationBatchSampler([u.duration for u in utterances], config.data.batch_seconds, seed=0)
    return config, [collate([dataset[i] for i in indices]) for indices in islice(sampler, count)]


def with_prior(config: Config, dataset: SpeechDataset, device: torch.device) -> Config:
    """``config`` with its feature prior measured on ``dataset``, as asr train measures its training set's."""
    if config.features.prior_frames <= 0:
        return config
    mean, std = training_prior(config, dataset, device)
    return dataclasses.replace(config, features=dataclasses.replace(config.features, prior_mean=mean, prior_std=std))


def median_of(runs: int, measure) -> float:
    return statistics.median(measure() for _ in range(runs))


def training_throughput(config: Config, batches: Sequence[Batch] | DataLoader, precision: str,
                        device: torch.device) -> float:
    """Seconds of audio per second through ``train_step``, one step a batch (a list, or a loader's)."""
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, precision=precision))
    state = new_state(config, Vocabulary(), device)
    trainer = new_trainer(config, state, device, total_steps=len(batches))
    batches = iter(batches)
    train_step(trainer, state, [next(batches)])  # warm-up: the first step allocates and, on a GPU, picks kernels
    started = time.perf_counter()
    audio = sum(train_step(trainer, state, [batch]).audio_seconds for batch in batches)
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


def real_time_factor(model_path: Path, paths: list[Path], audio_seconds: float, device: torch.device) -> float:
    started = time.perf_counter()
    recognizer = load_model(model_path, device)
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    device = choose_device(args.device)
    config, batches = benchmark_batches(args.config, args.manifest, args.batches, device)
    utterances = read_manifest(args.manifest)
    precision = args.precision or config.training.precision

    print(f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {len(batches)} batches of "
          f"{config.data.batch_seconds:.0f} s from {args.manifest}")
    fp32 = median_of(args.repeats, lambda: training_throughput(config, batches, "fp32", device))
    print(f"training throughput, fp32: {fp32:.1f} s of audio per second")
    if precision not in ("fp32", "auto"):
        mixed = median_of(args.repeats, lambda: training_throughput(config, batches, precision, device))
        print(f"training throughput, {precision} autocast: {mixed:.1f} s of audio per second ({mixed / fp32:.2f}x fp32)")
    if device.type == "cpu":
        print(f"LSTM stack, forward + backward: {lstm_gflops(config, None):.1f} GFLOP/s fp32, "
              f"{lstm_gflops(config, torch.bfloat16):.1f} GFLOP/s bf16 autocast")
    paths = [u.audio_filepath for u in utterances]
    audio_seconds = sum(u.duration for u in utterances)
    rtf = median_of(args.repeats, lambda: real_time_factor(Path(args.model), paths, audio_seconds, device))
    print(f"transcription with {args.model}: real-time factor {rtf:.4f} "
          f"({1 / rtf:.0f}x faster than real time, {len(paths)} files, {audio_seconds / 60:.1f} min of audio)")


if __name__ == "__main__":
    main()
