"""Recurrent cores compared: LSTM, GRU and vanilla RNN, bidirectional and forward-only, on AN4.

    python benchmarks/recurrent_core.py [--minutes 12] [--jobs 2] [--out runs/recurrent_core] [--variants bilstm,gru,...]

Each variant has --layers recurrent layers and the hidden size that brings its parameter
count closest to that of a bidirectional LSTM with --hidden units (the forward-only ones
with the model's lookahead convolution), and trains for the same --minutes of training
time (dev decoding not counted) from the same config, seed and batch order, in its own
`asr train` process. Everything else comes from --config, except: AN4 manifests only, no
speed perturbation, --warmup steps, --batch-seconds, and so many epochs that
training.max_minutes ends every run (the cosine decay then follows the share of the time
budget used).

Writes OUT/<variant>/ (what `asr train` writes), OUT/results.md, a table of parameters,
training throughput, epochs, best dev WER and CER, and gradient norms before clipping,
and OUT/results.png, dev WER against training time; prints the table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path

import yaml

from asr.augment import AugmentConfig
from asr.config import Config, load_config
from asr.data import read_manifest
from asr.model import AcousticModel, ModelConfig
from asr.text import Vocabulary

VARIANTS = {  # name: (rnn_type, bidirectional)
    "bilstm": ("lstm", True), "lstm": ("lstm", False),
    "bigru": ("gru", True), "gru": ("gru", False),
    "birnn": ("rnn", True), "rnn": ("rnn", False),
}
EPOCHS = 10_000  # never reached: training.max_minutes stops each run


def parameter_count(model: ModelConfig, n_mels: int) -> int:
    return sum(p.numel() for p in AcousticModel(model, n_mels, len(Vocabulary())).parameters())


def matching_hidden(model: ModelConfig, n_mels: int, target: int) -> int:
    """The hidden size whose model's parameter count is closest to ``target`` (counts grow with the size)."""
    def count(hidden: int) -> int:
        return parameter_count(dataclasses.replace(model, rnn_hidden=hidden), n_mels)

    low, high = 1, 2
    while count(high) < target:
        low, high = high, 2 * high
    while high - low > 1:  # count(low) < target <= count(high)
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < target else (low, middle)
    return min((low, high), key=lambda hidden: abs(count(hidden) - target))


def variant_configs(base: Config, names: list[str], reference_hidden: int) -> dict[str, Config]:
    """One config per variant, its hidden size matched to a bidirectional LSTM of ``reference_hidden`` units."""
    n_mels = base.features.n_mels
    target = parameter_count(dataclasses.replace(base.model, rnn_type="lstm", bidirectional=True,
                                                 rnn_hidden=reference_hidden), n_mels)
    configs = {}
    for name in names:
        rnn_type, bidirectional = VARIANTS[name]
        model = dataclasses.replace(base.model, rnn_type=rnn_type, bidirectional=bidirectional)
        configs[name] = dataclasses.replace(
            base, model=dataclasses.replace(model, rnn_hidden=matching_hidden(model, n_mels, target)))
    return configs


def benchmark_base(config_path: str, train: str, dev: str, minutes: float, warmup: int, batch_seconds: float,
                   layers: int) -> Config:
    config = load_config(config_path)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, rnn_layers=layers),
        data=dataclasses.replace(config.data, train=[train], dev=[dev], batch_seconds=batch_seconds),
        augment=AugmentConfig(),
        training=dataclasses.replace(config.training, epochs=EPOCHS, max_minutes=minutes, warmup_steps=warmup),
    )


def run_variant(config: Config, out_dir: Path, threads: int) -> None:
    """`asr train` in a fresh process on ``config``, saved as OUT/config.yaml (which training rewrites the same)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    subprocess.run([sys.executable, "-m", "cli", "train", "--config", str(config_path), "--out", str(out_dir)],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def label(model: ModelConfig) -> str:
    cell = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[model.rnn_type]
    return f"{cell}, bidirectional" if model.bidirectional else f"{cell}, forward + lookahead {model.lookahead}"


def summary(config: Config, out_dir: Path, training_audio: float) -> dict[str, str]:
    """One table row from a finished run's log.csv and steps.csv."""
    epochs = read_csv(out_dir / "log.csv")
    steps = read_csv(out_dir / "steps.csv")
    seconds = [float(e["epoch_seconds"]) for e in epochs]
    audio = math.fsum(float(e["audio_seconds_per_second"]) * s for e, s in zip(epochs, seconds))
    best = min(epochs, key=lambda e: float(e["dev_wer"]))
    norms = [float(s["grad_norm"]) for s in steps]
    return {
        "variant": label(config.model),
        "hidden": str(config.model.rnn_hidden),
        "parameters": f"{parameter_count(config.model, config.features.n_mels) / 1e6:.2f}M",
        "audio s/s": f"{audio / math.fsum(seconds):.1f}",
        "epochs": f"{audio / training_audio:.1f}",
        "best dev WER": f"{100 * float(best['dev_wer']):.1f}%",
        "dev CER": f"{100 * float(best['dev_cer']):.1f}%",
        "at minute": f"{math.fsum(seconds[:epochs.index(best) + 1]) / 60:.1f}",
        "grad norm median": f"{statistics.median(norms):.2f}",
        "grad norm max": f"{max(norms):.1f}",
        "steps clipped": f"{100 * sum(int(s['clipped']) for s in steps) / len(steps):.0f}%",
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row.values()) + " |" for row in rows])


def plot(configs: dict[str, Config], out: Path, path: Path) -> None:
    """Dev WER after each epoch against cumulative training time, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"lstm": "tab:blue", "gru": "tab:orange", "rnn": "tab:green"}
    figure, axis = plt.subplots(figsize=(8, 5))
    longest = 0.0
    for name, config in configs.items():
        epochs = read_csv(out / name / "log.csv")
        minutes = list(accumulate(float(e["epoch_seconds"]) / 60 for e in epochs))
        longest = max(longest, minutes[-1])
        axis.plot(minutes, [100 * float(e["dev_wer"]) for e in epochs], marker="o", color=colours[config.model.rnn_type],
                  linestyle="-" if config.model.bidirectional else "--",
                  label=f"{label(config.model)} ({config.model.rnn_hidden} units)")
    axis.set(xlabel="training time (minutes, dev decoding excluded)", ylabel="dev WER (%, greedy)",
             title="AN4 dev speakers: recurrent cores at equal parameter counts")
    axis.set_xlim(0, 1.05 * longest)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="runs/data/an4/train.jsonl")
    parser.add_argument("--dev", default="runs/data/an4/dev.jsonl")
    parser.add_argument("--config", default="configs/default.yaml", help="features, model and optimiser settings")
    parser.add_argument("--minutes", type=float, default=12.0, help="training time per variant")
    parser.add_argument("--layers", type=int, default=2,
                        help="recurrent layers (on AN4 alone, three-layer stacks sit on CTC's all-blank plateau "
                             "for longer than a short budget)")
    parser.add_argument("--hidden", type=int, default=128,
                        help="every variant matches the parameter count of a bidirectional LSTM this wide")
    parser.add_argument("--warmup", type=int, default=100, help="learning-rate warmup steps")
    parser.add_argument("--batch-seconds", type=float, default=10.0,
                        help="small batches: CTC leaves its all-blank plateau after a number of steps")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=Path("runs/recurrent_core"))
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once, each on its share of the cores")
    args = parser.parse_args()
    names = args.variants.split(",")
    if unknown := set(names) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    base = benchmark_base(args.config, args.train, args.dev, args.minutes, args.warmup, args.batch_seconds,
                          args.layers)
    configs = variant_configs(base, names, args.hidden)
    for name, config in configs.items():
        print(f"{name}: {label(config.model)}, hidden {config.model.rnn_hidden}, "
              f"{parameter_count(config.model, config.features.n_mels):,} parameters", flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)  # the cores shared out, so that no run waits on another
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda name: run_variant(configs[name], args.out / name, threads), configs))

    training_audio = math.fsum(u.duration for u in read_manifest(args.train))
    table = markdown_table([summary(config, args.out / name, training_audio) for name, config in configs.items()])
    (args.out / "results.md").write_text(table + "\n")
    plot(configs, args.out, args.out / "results.png")
    print(table)


if __name__ == "__main__":
    main()
