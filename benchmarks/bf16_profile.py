"""Where bf16 autocast training gains and loses against fp32 on the CPU: a torch.profiler table per precision.

    python benchmarks/bf16_profile.py [--manifest runs/data/an4/dev.jsonl] [--config configs/default.yaml]
                                      [--batches 8] [--rows 25]

Runs asr.train.train_step on the same batches (as benchmarks/benchmark.py builds them) at fp32 and bf16,
under torch.profiler with shapes recorded, and prints for each precision the ops ranked by self CPU time,
then one line per op name comparing its self time in bf16 with fp32, largest difference first.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from asr.config import Config
from asr.data import Batch
from asr.text import Vocabulary
from asr.train import new_state, new_trainer, train_step
from benchmark import benchmark_batches


def profile_training(config: Config, batches: list[Batch], precision: str) -> profile:
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, precision=precision))
    device = torch.device("cpu")
    state = new_state(config, Vocabulary(), device)
    trainer = new_trainer(config, state, device, total_steps=len(batches))
    train_step(trainer, state, batches[:1])  # warm-up: the first step allocates
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for batch in batches:
            train_step(trainer, state, [batch])
    return profiler


def self_times_ms(profiler: profile) -> dict[str, float]:
    times: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        times[event.key] += event.self_cpu_time_total / 1e3
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="runs/data/an4/dev.jsonl")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    config, batches = benchmark_batches(args.config, args.manifest, args.batches, torch.device("cpu"))
    profilers = {precision: profile_training(config, batches, precision) for precision in ("fp32", "bf16")}
    for precision, profiler in profilers.items():
        print(f"\n{precision}, {len(batches)} steps, by self CPU time, with input shapes:")
        print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                     row_limit=args.rows, max_name_column_width=40,
                                                                     max_shapes_column_width=60))
    fp32, bf16 = (self_times_ms(profilers[p]) for p in ("fp32", "bf16"))
    print(f"\ntotal self CPU time: fp32 {sum(fp32.values()):.0f} ms, bf16 {sum(bf16.values()):.0f} ms")
    print(f"{'op':<45} {'fp32 ms':>9} {'bf16 ms':>9} {'bf16 - fp32':>12}")
    for name in sorted(fp32.keys() | bf16.keys(), key=lambda n: -abs(bf16.get(n, 0) - fp32.get(n, 0)))[:args.rows]:
        print(f"{name[:45]:<45} {fp32.get(name, 0):>9.1f} {bf16.get(name, 0):>9.1f} "
              f"{bf16.get(name, 0) - fp32.get(name, 0):>+12.1f}")


if __name__ == "__main__":
    main()
