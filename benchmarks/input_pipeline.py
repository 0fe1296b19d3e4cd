"""What the input pipeline costs training: the same batches loaded during training, or beforehand.

    python benchmarks/input_pipeline.py [--config configs/default.yaml] [--batches 100] [--repeats 3]

Takes the first --batches batches of an epoch of the config's training set, with its
augmentation (reading, resampling, trimming, speed perturbation, ...), and trains a
fresh model of the config on them, in turn:
- loaded by the config's `data.num_workers` loader worker processes while it trains, as
  `asr train` does;
- loaded beforehand into memory, so that training does nothing else: the most that
  any faster input pipeline could gain.
Prints each run's seconds of audio trained on per second and the medians' ratio. Needs
the config's manifests (scripts/train_default_model.sh prepares the bundled config's).
"""

from __future__ import annotations

import argparse
import statistics
from itertools import islice

import torch
from torch.utils.data import DataLoader

from asr.config import load_config
from asr.data import collate
from asr.model import AcousticModel
from asr.text import Vocabulary
from asr.train_data import training_batches, training_set
from benchmark import training_throughput, with_prior

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    vocabulary = Vocabulary()
    dataset, _ = training_set(config, vocabulary, AcousticModel(config.model, config.features.n_mels, len(vocabulary)))
    config = with_prior(config, dataset, CPU)
    sampler = training_batches(config, dataset)
    sampler.set_epoch(1, start=0)
    dataset.epoch = 1
    batches = list(islice(sampler, args.batches))

    def loader(workers: int) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers)

    arms = {f"loaded by {config.data.num_workers} worker(s) during training":
            lambda: training_throughput(config, loader(config.data.num_workers), "fp32", CPU),
            "loaded beforehand": lambda: training_throughput(config, list(loader(0)), "fp32", CPU)}
    results: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name, measure in arms.items():
            results[name].append(measure())
            print(f"run {repeat + 1}, {name}: {results[name][-1]:.1f} s of audio per second", flush=True)
    during, beforehand = (statistics.median(values) for values in results.values())
    print(f"medians of {args.repeats}: {during:.1f} during training, {beforehand:.1f} loaded beforehand: "
          f"an input pipeline that cost nothing would train {beforehand / during:.3f}x as fast")


if __name__ == "__main__":
    main()
