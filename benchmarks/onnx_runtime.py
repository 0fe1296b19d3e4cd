"""The ONNX path (fp32 and int8) against the torch one, end to end in fresh `asr transcribe` processes.

    python benchmarks/onnx_runtime.py [--manifest runs/data/an4/dev.jsonl] [--files N] [--repeats 5]

Exports the bundled model with `asr export` to ONNX, in float and with --int8, in a temporary folder.
Then, the models taking turns in every round: one short clip (wall time and peak memory, by
/usr/bin/time), and every file of the manifest (or its first N) in one call (real-time factor, start-up included),
greedy. Prints each model's medians; the machine is shared, so compare the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from long_audio import REPO, dev_utterances, run_measured

CLIP = REPO / "data" / "samples" / "fsdd-5_nicolas_23.flac"  # 0.4 s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "runs/data/an4/dev.jsonl")
    parser.add_argument("--files", type=int, help="the manifest's first N files only (all by default)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asr-onnx-") as scratch:
        scratch = Path(scratch)
        models = {"torch (model.pt)": REPO / "data" / "model.pt", "onnx fp32": scratch / "model.onnx",
                  "onnx int8": scratch / "int8" / "model.onnx"}
        subprocess.run(["asr", "export", REPO / "data" / "model.pt", models["onnx fp32"]], check=True)
        subprocess.run(["asr", "export", REPO / "data" / "model.pt", models["onnx int8"], "--int8"], check=True)
        utterances = dev_utterances(args.manifest, scratch)[:args.files]
        files = [str(u.audio_filepath) for u in utterances]
        audio_seconds = sum(u.duration for u in utterances)
        clip: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        many: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():
                command = ["asr", "transcribe", "--model", str(model), "--decoder", "greedy"]
                clip[name].append(run_measured([*command, str(CLIP)]))
                many[name].append(run_measured([*command, *files, "--output-dir", str(scratch / "out"),
                                                "--no-progress"])[0])
        print(f"one short clip ({CLIP.name}), and {len(files)} files ({audio_seconds / 60:.1f} min) in one call, "
              f"greedy; medians of {args.repeats}")
        for name in models:
            seconds = statistics.median(s for s, _ in clip[name])
            megabytes = statistics.median(m for _, m in clip[name])
            rtf = statistics.median(many[name]) / audio_seconds
            print(f"{name:16}  clip {seconds:5.2f} s {megabytes:6.0f} MB   files: real-time factor {rtf:.4f}")


if __name__ == "__main__":
    main()
