"""Leave one FSDD speaker out: train without him, then read his digits.

    python benchmarks/unseen_fsdd_speaker.py [--speaker george --speaker lucas ...] [--seed 0]
        [--config configs/jackson_held_out.yaml] [--fsdd runs/data/fsdd-all/train.jsonl] [--out runs/unseen]

The project's target for an unseen FSDD speaker can only be measured here by holding out
one of the five speakers in ../shared, and one held-out speaker is a small, noisy sample
(500 clips of one voice, one microphone). This trains the recipe once per held-out speaker
and prints, for each, greedy and beam-search WER on his 500 digits and greedy WER on AN4's
dev speakers, then the median over the speakers.

The recipe is --config with its FSDD training manifest (any `data.train` entry under the
folder of a `fsdd-*` manifest) replaced by --fsdd less the held-out speaker, and its seed set
to --seed. AN4's dev speakers alone choose the epochs, as in the config. A speaker whose run
folder already holds a finished run is only scored again. Run it after the first steps of
scripts/train_default_model.sh (the manifests it names must exist); about 20-25 minutes
a speaker on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import yaml

from asr.data import Utterance, read_manifest, write_manifest

LM = ["--lm", "data/model.lm.arpa", "--alpha", "0.4", "--beta", "0"]


def speaker_of(utterance: Utterance) -> str:
    """FSDD names its recordings DIGIT_SPEAKER_INDEX.wav."""
    return utterance.audio_filepath.stem.split("_")[1]


def split_manifest(fsdd: list[Utterance], speaker: str, folder: Path) -> tuple[Path, Path]:
    """Write the other speakers' clips and the held-out speaker's clips to two manifests in ``folder``."""
    train, held_out = folder / "fsdd_train.jsonl", folder / f"{speaker}.jsonl"
    write_manifest(train, [u for u in fsdd if speaker_of(u) != speaker])
    write_manifest(held_out, [u for u in fsdd if speaker_of(u) == speaker])
    return train, held_out


def recipe(config: Path, fsdd_train: Path, seed: int) -> dict:
    settings = yaml.safe_load(config.read_text())
    manifests = settings["data"]["train"]
    fsdd_entries = [m for m in manifests if Path(m).parent.name.startswith("fsdd")]
    if len(fsdd_entries) != 1:
        raise SystemExit(f"{config}: expected one FSDD manifest in data.train, found {fsdd_entries}")
    settings["data"]["train"] = [str(fsdd_train) if m in fsdd_entries else m for m in manifests]
    settings["training"]["seed"] = seed
    return settings


def held_out_base(fsdd: list[Utterance], speaker: str, config: Path, seed: int, out: Path) -> tuple[Path, Path]:
    """Train ``config`` without ``speaker`` (once: a finished run is reused, a stopped one resumed).
    Returns its best checkpoint and the manifest of his clips."""
    run = out / f"{speaker}_seed{seed}"
    fsdd_train, held_out = split_manifest(fsdd, speaker, run)
    finished = run / "finished"  # written once training has returned, so a rerun only scores
    if not finished.exists():
        recipe_file = run / "recipe.yaml"  # not config.yaml, which asr train writes: the config as it resolved it
        recipe_file.write_text(yaml.safe_dump(recipe(config, fsdd_train, seed), sort_keys=False))
        resume = ["--resume"] if (run / "last.pt").exists() else []
        subprocess.run(["asr", "train", "--config", str(recipe_file), "--out", str(run), *resume], check=True)
        finished.touch()
    return run / "best.pt", held_out


def word_error_rate(manifest: Path, model: Path, *options: str) -> float:
    result = subprocess.run(["asr", "evaluate", str(manifest), "--model", str(model), "--json", *options],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["wer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speaker", action="append", help="held-out speaker; repeatable; all five if omitted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=Path("configs/jackson_held_out.yaml"))
    parser.add_argument("--fsdd", type=Path, default=Path("runs/data/fsdd-all/train.jsonl"))
    parser.add_argument("--an4-dev", type=Path, default=Path("runs/data/an4/dev.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("runs/unseen"))
    args = parser.parse_args()

    fsdd = read_manifest(args.fsdd)
    speakers = args.speaker or sorted({speaker_of(utterance) for utterance in fsdd})
    rows = []
    for speaker in speakers:
        model, held_out = held_out_base(fsdd, speaker, args.config, args.seed, args.out)
        row = (speaker,
               word_error_rate(held_out, model, "--decoder", "greedy"),
               word_error_rate(held_out, model, "--decoder", "beam", *LM),
               word_error_rate(args.an4_dev, model, "--decoder", "greedy"))
        rows.append(row)
        print(f"{speaker}: his digits {row[1]:.1%} greedy, {row[2]:.1%} beam + LM; AN4 dev {row[3]:.1%} greedy",
              flush=True)

    print("\n| held out | his digits, greedy | beam + LM | AN4 dev, greedy |\n| --- | --- | --- | --- |")
    for speaker, greedy, beam, an4 in rows:
        print(f"| {speaker} | {greedy:.1%} | {beam:.1%} | {an4:.1%} |")
    medians = [statistics.median(column) for column in list(zip(*rows))[1:]]
    print("| median | " + " | ".join(f"{m:.1%}" for m in medians) + " |")


if __name__ == "__main__":
    main()
