"""Real-time factor of `asr transcribe` on a batch of short files, end to end.

    python benchmarks/many_files.py [--manifest runs/data/an4/dev.jsonl] [--repeats 3]

Runs `asr transcribe FILES --output-dir TMP` in a fresh process (start-up, imports and
model loading included) on the manifest's files (AN4's dev speakers by default; prepared
from ../shared/corpora/an4 into a temporary folder when the manifest is missing), greedy
and with the model's default decoder (beam search with its LM), and prints the median
real-time factor of --repeats runs of each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from long_audio import REPO, dev_utterances


def wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "runs/data/an4/dev.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asr-many-") as scratch:
        utterances = dev_utterances(args.manifest, Path(scratch))
        audio_seconds = sum(u.duration for u in utterances)
        print(f"{len(utterances)} files, {audio_seconds / 60:.1f} min of audio")
        for decoder, label in ((["--decoder", "greedy"], "greedy"), ([], "default decoder (beam + LM)")):
            command = [sys.executable, "-c", "import cli; cli.main()", "transcribe",
                       *[str(u.audio_filepath) for u in utterances], "--output-dir", str(Path(scratch) / "out"),
                       "--no-progress", *decoder]
            rtf = statistics.median(wall_seconds(command) for _ in range(args.repeats)) / audio_seconds
            print(f"{label}: real-time factor {rtf:.4f} ({1 / rtf:.0f} times faster than real time; "
                  f"median of {args.repeats}, start-up and model loading included)")


if __name__ == "__main__":
    main()
