"""Adapting to an FSDD speaker the model never heard: k of his clips, WER on his others, and what it forgets.

    python benchmarks/adapt_fsdd.py [--speaker nicolas ...] [--clips 5 10 25 50] [--seed 0]
        [--config configs/jackson_held_out.yaml] [--out runs/unseen] [--learning-rate R] [--passes N]
        [--test-after 50]

For each speaker (all five if none is named), the base is --config trained without him, as
benchmarks/unseen_fsdd_speaker.py trains it (reused when that run has finished), with the bundled LM and its
weights attached. His 500 clips are dealt round-robin over the digits in a seeded order, so that the first k
hold k/10 of each digit (rounded), each k's clips include the smaller k's, and the clips after the first
--test-after (50: 450 of them) are the test clips for every k. `asr.adapt.adapt` then fine-tunes the base on
his first k clips with its default recipe (or the --learning-rate and --passes given), and the script prints,
for each k: greedy and beam + LM WER on his test clips, the wall time of the adaptation (its before and after
evaluations on the test clips included), and AN4 dev WER greedy and beam + LM (forgetting), for the base in
the row k = 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

from unseen_fsdd_speaker import held_out_base, speaker_of

from asr.adapt import Recipe, adapt, measure
from asr.checkpoint import DEFAULT_MODEL, attach_lm, load_checkpoint
from asr.data import Utterance, read_manifest, write_manifest
from asr.recognizer import load_model


def dealt(clips: list[Utterance], seed: int) -> list[Utterance]:
    """His clips in the order they are handed to adaptation: a clip of every digit, in a seeded order, per round."""
    rng = random.Random(seed)
    by_digit: dict[str, list[Utterance]] = defaultdict(list)
    for clip in sorted(clips, key=lambda u: u.audio_filepath.name):
        by_digit[clip.audio_filepath.stem.split("_")[0]].append(clip)
    for takes in by_digit.values():
        rng.shuffle(takes)
    digits = sorted(by_digit)
    rng.shuffle(digits)
    rounds = max(len(takes) for takes in by_digit.values())
    return [by_digit[d][r] for r in range(rounds) for d in digits if r < len(by_digit[d])]


def base_with_lm(model: Path, path: Path) -> Path:
    """A copy of ``model`` carrying the bundled model's LM and weights, so that adapting keeps them."""
    shutil.copyfile(model, path)
    bundled = load_checkpoint(DEFAULT_MODEL)["decoder"]
    attach_lm(path, DEFAULT_MODEL.parent / bundled["lm"], bundled["alpha"], bundled["beta"])
    return path


def an4_rates(model: Path, an4_dev: Path) -> tuple[float, float]:
    """Greedy and beam-search (the model's LM) WER on AN4 dev, measured as adapt measures before and after."""
    rates, _ = measure(load_model(model, "cpu"), an4_dev)
    return rates.greedy.wer, rates.beam.wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speaker", action="append", help="held-out speaker; repeatable; all five if omitted")
    parser.add_argument("--clips", type=int, nargs="+", default=[5, 10, 25, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=Path("configs/jackson_held_out.yaml"))
    parser.add_argument("--fsdd", type=Path, default=Path("runs/data/fsdd-all/train.jsonl"))
    parser.add_argument("--an4-dev", type=Path, default=Path("runs/data/an4/dev.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("runs/unseen"))
    parser.add_argument("--test-after", type=int, default=50, help="clips dealt to adaptation before his test clips")
    defaults = Recipe()
    for name in ("learning_rate", "passes"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name))
    args = parser.parse_args()
    recipe = dataclasses.replace(defaults, learning_rate=args.learning_rate, passes=args.passes)
    if max(args.clips) > args.test_after:
        parser.error(f"--clips: at most --test-after ({args.test_after}), the clips before his test clips")

    fsdd = read_manifest(args.fsdd)
    speakers = args.speaker or sorted({speaker_of(utterance) for utterance in fsdd})
    print("| speaker | k | his other clips, greedy | beam + LM | minutes | AN4 dev greedy | AN4 dev beam + LM |\n"
          "| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for speaker in speakers:
        trained, his_clips = held_out_base(fsdd, speaker, args.config, args.seed, args.out)
        folder = args.out / f"{speaker}_seed{args.seed}" / "adapt"
        folder.mkdir(parents=True, exist_ok=True)
        base = base_with_lm(trained, folder / "base.pt")
        order = dealt(read_manifest(his_clips), args.seed)
        test = folder / f"test_after{args.test_after}.jsonl"
        write_manifest(test, order[args.test_after:])
        for k in args.clips:
            write_manifest(folder / f"first{k}.jsonl", order[:k])
            start = time.perf_counter()
            result = adapt([folder / f"first{k}.jsonl"], folder / f"k{k}", base=base, dev=test, recipe=recipe,
                           force=True)
            minutes = (time.perf_counter() - start) / 60
            if k == args.clips[0]:
                before = result.before
                print(f"| {speaker} | 0 | {before.greedy.wer:.1%} | {before.beam.wer:.1%} | - | "
                      + " | ".join(f"{wer:.1%}" for wer in an4_rates(base, args.an4_dev)) + " |", flush=True)
            print(f"| {speaker} | {k} | {result.after.greedy.wer:.1%} | {result.after.beam.wer:.1%} | {minutes:.1f} | "
                  + " | ".join(f"{wer:.1%}" for wer in an4_rates(result.model, args.an4_dev)) + " |", flush=True)


if __name__ == "__main__":
    main()
