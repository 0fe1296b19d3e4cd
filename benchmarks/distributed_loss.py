"""One process against two gloo processes under torchrun: dev loss after the same number of epochs.

    python benchmarks/distributed_loss.py [--epochs 6] [--out runs/distributed_loss]

Trains a small BiLSTM (2 x 128) on the AN4 and FSDD training speakers (runs/data, see
scripts/train_default_model.sh) once in one process with two threads and batches of
--batch-seconds, and once as two torchrun processes with one thread each and half that
per process, so both take about the same optimiser steps on the same global batch. Prints
each run's dev loss (CTC per utterance) and greedy dev WER per epoch, and the relative
difference of the final dev losses.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def config(train: list[str], dev: list[str], epochs: int, batch_seconds: float) -> dict:
    return {"model": {"conv_channels": 16, "rnn_layers": 2, "rnn_hidden": 128, "dropout": 0.1},
            "data": {"train": train, "dev": dev, "batch_seconds": batch_seconds, "num_workers": 1},
            "training": {"epochs": epochs, "learning_rate": 3e-3, "warmup_steps": 100, "precision": "fp32", "seed": 0}}


def run(command: list[str], threads: int) -> None:
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def dev_losses(out: Path) -> list[tuple[float, float]]:
    with open(out / "log.csv", newline="") as log_file:
        return [(float(row["dev_loss"]), float(row["dev_wer"])) for row in csv.DictReader(log_file)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", default=["runs/data/an4/train.jsonl", "runs/data/fsdd/train.jsonl"])
    parser.add_argument("--dev", nargs="+", default=["runs/data/an4/dev.jsonl", "runs/data/fsdd/dev.jsonl"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-seconds", type=float, default=20.0, help="the global batch")
    parser.add_argument("--out", type=Path, default=Path("runs/distributed_loss"))
    args = parser.parse_args()

    runs = {"one process": (1, []), "two processes": (2, [sys.executable, "-m", "torch.distributed.run",
                                                          "--standalone", "--nproc-per-node", "2"])}
    for name, (processes, launcher) in runs.items():
        out = args.out / name.replace(" ", "_")
        out.mkdir(parents=True, exist_ok=True)
        path = out / "config.yaml"
        path.write_text(yaml.safe_dump(config(args.train, args.dev, args.epochs, args.batch_seconds / processes)))
        command = [*(launcher or [sys.executable]), "-m", "cli", "train", "--config", str(path), "--out", str(out)]
        run(command, threads=2 // processes)
    results = {name: dev_losses(args.out / name.replace(" ", "_")) for name in runs}
    for name, rows in results.items():
        print(f"{name}: dev loss by epoch " + ", ".join(f"{loss:.2f}" for loss, _ in rows)
              + f"; final dev WER {rows[-1][1]:.1%}")
    single, double = results["one process"][-1][0], results["two processes"][-1][0]
    print(f"final dev loss: one process {single:.3f}, two processes {double:.3f}, "
          f"difference {100 * (double - single) / single:+.1f}%")


if __name__ == "__main__":
    main()
