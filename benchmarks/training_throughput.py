"""Training throughput of `asr train` now against an earlier version, in one run.

    python benchmarks/training_throughput.py [--baseline b420b87] [--config configs/default.yaml] [--repeats 3] [--as-is]

Checks the --baseline commit out into a temporary git worktree (the pipeline's first
version by default) and runs `asr train` for one epoch of the bundled model's config,
from that worktree and from this checkout, in turn, --repeats times, each in a fresh
process with the machine's threads, in fp32 (the CPU default). Each run trains on the
same manifests from this checkout's runs/data (see scripts/train_default_model.sh).

The first version knows no `augment` section, so every run leaves speed perturbation out:
all of them do the same work on the same audio. With --as-is, against a later baseline
that knows them, runs keep the config's augmentation and other settings. Prints each run's seconds of audio
trained on per second (the epoch's audio over its training time, dev decoding not
counted, from log.csv) and the medians' ratios.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Settings added after the first version, which rejects them; none changes what one epoch's steps compute by
# more than an elementwise pass (the prior's statistics are measured before the epoch's clock starts).
LATER_TRAINING_KEYS = {"max_minutes", "average_best"}
LATER_FEATURE_KEYS = {"prior_frames", "remove_level", "random_gain_db", "random_eq_db"}


def epoch_config(path: Path, as_is: bool = False) -> dict:
    """The config at ``path`` for a one-epoch fp32 run without augmentation or the settings the first version
    lacks (with ``as_is``, with them), its manifests' paths made absolute (runs start in the folder of the code
    they run)."""
    config = yaml.safe_load(path.read_text())
    if not as_is:
        config.pop("augment", None)
        config["features"] = {key: value for key, value in config.get("features", {}).items()
                              if key not in LATER_FEATURE_KEYS}
    config["data"] = {**config["data"], **{split: [str((REPO / manifest).resolve()) for manifest in config["data"][split]]
                                           for split in ("train", "dev")}}
    config["training"] = {**{key: value for key, value in config.get("training", {}).items()
                             if as_is or key not in LATER_TRAINING_KEYS}, "epochs": 1, "precision": "fp32"}
    return config


def throughput(source: Path, config: dict, out: Path) -> float:
    """Seconds of audio per second of one `asr train` epoch, run from the code in ``source``."""
    out.mkdir(parents=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-c", "import cli; cli.main()", "train", "--config", str(config_path),
                    "--out", str(out)], check=True, cwd=source, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # imports from ``source``
    with open(out / "log.csv", newline="") as log_file:
        (row,) = csv.DictReader(log_file)
    return float(row["audio_seconds_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b420b87", help="the commit to compare with")
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--as-is", action="store_true",
                        help="keep the config's augmentation and later settings, for a baseline that knows them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="asr-throughput-") as scratch:
        scratch = Path(scratch)
        baseline = scratch / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], check=True, cwd=REPO,
                       capture_output=True)
        try:
            arms = {f"baseline {args.baseline}": baseline, "this checkout": REPO}
            config = epoch_config(args.config, args.as_is)
            results: dict[str, list[float]] = {name: [] for name in arms}
            for repeat in range(args.repeats):
                for number, (name, source) in enumerate(arms.items()):
                    value = throughput(source, config, scratch / "runs" / f"{repeat}-{number}")
                    results[name].append(value)
                    print(f"run {repeat + 1}, {name}: {value:.1f} s of audio per second", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], check=True, cwd=REPO)

    baseline_median, ours = (statistics.median(values) for values in results.values())
    print(f"medians of {args.repeats}: baseline {baseline_median:.1f}, this checkout {ours:.1f} s of audio per second: "
          f"{ours / baseline_median:.2f}x")


if __name__ == "__main__":
    main()
