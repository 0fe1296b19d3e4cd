"""Adapt the bundled model to one speaker's sentences, holding out whole prompts, and score it before and after.

    asr prepare folder ../shared/corpora/cathy-arctic-a --out runs/adapt/cathy-all
    python benchmarks/adapt_speaker.py runs/adapt/cathy-all/train.jsonl --out runs/adapt/default \
        [--held-out-share 0.1] [--learning-rate 5e-4] [--max-minutes 15]

A take's prompt is the ``arctic_aNNNN`` in its file name; a seeded share of the prompts, with every take of
each, is held out, so that the after figures are on sentences the model did not adapt on. Prints greedy and
beam WER and CER on the held-out takes before and after, and the wall time of ``asr.adapt.adapt`` (its
evaluations included) as one JSON line. Options not given are the recipe's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import time
from pathlib import Path

from asr.adapt import Recipe, adapt
from asr.data import read_manifest, write_manifest


def split_by_prompt(manifest: Path, share: float, out: Path, seed: int = 0) -> tuple[Path, Path]:
    utterances = read_manifest(manifest)
    prompt = {u.audio_filepath: re.match(r"arctic_a\d+", u.audio_filepath.name).group(0) for u in utterances}
    prompts = sorted(set(prompt.values()))
    held_out = set(random.Random(seed).sample(prompts, round(share * len(prompts))))
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "adapt.jsonl", [u for u in utterances if prompt[u.audio_filepath] not in held_out])
    write_manifest(out / "held_out.jsonl", [u for u in utterances if prompt[u.audio_filepath] in held_out])
    return out / "adapt.jsonl", out / "held_out.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--held-out-share", type=float, default=0.1)
    defaults = Recipe()
    names = ("learning_rate", "passes", "max_minutes", "min_epoch_seconds", "batch_seconds", "warmup_steps")
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name))
    args = parser.parse_args()
    recipe = dataclasses.replace(defaults, **{name: getattr(args, name) for name in names})
    train, held_out = split_by_prompt(args.manifest, args.held_out_share, args.out / "data")
    start = time.perf_counter()
    result = adapt([train], args.out / "model", dev=held_out, recipe=recipe, force=True)
    seconds = time.perf_counter() - start
    rates = {f"{when}_{kind}_{measure}": round(100 * getattr(getattr(getattr(result, when), kind), measure), 2)
             for when in ("before", "after") for kind in ("greedy", "beam") for measure in ("wer", "cer")}
    print(json.dumps({"recipe": dataclasses.asdict(recipe), "adapted_on": result.trained_on,
                      "held_out": len(read_manifest(held_out)), "minutes": round(seconds / 60, 1), **rates}))


if __name__ == "__main__":
    main()
