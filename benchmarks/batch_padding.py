"""How much of a training epoch's batches is padding: batches sized by the durations each epoch's
augmentation draws, as `asr train` sizes them, against batches sized by the longest any epoch could draw.

    python benchmarks/batch_padding.py [--config configs/default.yaml] [--epochs 3]

The model computes over every frame of a batch, padding included, so the padding's share
is the share of training compute spent on nothing. An utterance's length in an epoch is
its duration as recorded, or trimmed to its speech, at the speed and with the room-tone
padding its augmentation draws (``Augmentation.durations``, which `asr train` sizes
batches by). The audio is read once, to measure trimmed durations, and nothing is timed:
the figures are exact and the same on any machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from asr.config import load_config
from asr.data import DurationBatchSampler
from asr.model import AcousticModel
from asr.text import Vocabulary
from asr.train_data import training_batches, training_set


def padding_share(batches: list[list[int]], lengths: Sequence[float]) -> float:
    """Padding over padded seconds: each batch is padded to its longest utterance."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths) / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    vocabulary = Vocabulary()
    dataset, _ = training_set(config, vocabulary, AcousticModel(config.model, config.features.n_mels, len(vocabulary)))
    trained = training_batches(config, dataset, progress=True)
    samplers = {"by the longest any epoch could draw": DurationBatchSampler(
                    [config.augment.longest(u.duration) for u in dataset.utterances], config.data.batch_seconds,
                    seed=config.training.seed),
                "by each epoch's drawn durations (asr train)": trained}
    for epoch in range(1, args.epochs + 1):
        lengths = trained.durations_in(epoch)
        for name, sampler in samplers.items():
            batches = sampler.batches(epoch)
            print(f"epoch {epoch}, batches sized {name}: {len(batches)} batches, "
                  f"{padding_share(batches, lengths):.1%} padding", flush=True)


if __name__ == "__main__":
    main()
