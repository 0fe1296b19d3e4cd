"""Long recordings: words lost or doubled at the cuts, peak memory, and speed.

    python benchmarks/long_audio.py [--manifest runs/data/an4/dev.jsonl] [--minutes 10 60] [--repeats 3] [--model M]

Joins the manifest's utterances (AN4's dev speakers by default; prepared from
../shared/corpora/an4 into a temporary folder when the manifest is missing) with
--gap seconds between them, of digital silence or of room tone (the quietest 100 ms of
the clip before, repeated, as in one continuous recording), and prints:
- the WER of transcribing the joined recording as one file against the WER of
  transcribing the utterances one by one, and their ratio, greedy and with the model's
  default decoder (beam search with its LM);
- for recordings of each of --minutes (the utterances repeated), the peak memory (RSS)
  and the real-time factor of `asr transcribe --model M` (the bundled model.pt by default) on it in
  a fresh process, model loading included (the median of --repeats runs).
Recordings are written to a temporary folder, never into the repository.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from asr.audio import SAMPLE_RATE, load_audio
from asr.checkpoint import DEFAULT_MODEL
from asr.data import Utterance, read_manifest
from asr.evaluate import error_rates
from asr.recognizer import load_model
from asr.transcribe import transcribe_files

REPO = Path(__file__).resolve().parent.parent
GAPS = ("silence", "room tone")


def dev_utterances(manifest: Path, scratch: Path) -> list[Utterance]:
    if not manifest.exists():
        out = scratch / "an4"
        subprocess.run([sys.executable, "-c", "import cli; cli.main()", "prepare", "an4",
                        str(REPO.parent / "shared" / "corpora" / "an4"), "--out", str(out)], check=True, cwd=REPO)
        manifest = out / "dev.jsonl"
    return read_manifest(manifest)


def gap_after(clip: np.ndarray, seconds: float, fill: str) -> np.ndarray:
    length = round(seconds * SAMPLE_RATE)
    if fill == "silence":
        return np.zeros(length, dtype=np.float32)
    piece = SAMPLE_RATE // 10
    energies = [np.var(clip[i:i + piece]) for i in range(0, len(clip) - piece + 1, piece)]
    quietest = int(np.argmin(energies)) * piece
    return np.resize(clip[quietest:quietest + piece], length)


def write_joined(utterances: list[Utterance], path: Path, gap: float, fill: str, seconds: float | None = None) -> float:
    """Write the utterances one after another with ``gap`` s of ``fill`` between them, cycling through
    them until ``seconds`` of audio when given; written a clip at a time. Returns the duration."""
    written = 0
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as out:
        cycle = 0
        while cycle == 0 or (seconds is not None and written < seconds * SAMPLE_RATE):
            for utterance in utterances:
                clip = load_audio(utterance.audio_filepath)
                for samples in (clip, gap_after(clip, gap, fill)):
                    out.write(samples.astype(np.float32))
                    written += len(samples)
                if seconds is not None and written >= seconds * SAMPLE_RATE:
                    break
            cycle += 1
    return written / SAMPLE_RATE


def word_error_rates(utterances: list[Utterance], joined: list[Path], decoder_kind: str | None) -> list[float]:
    """WER of the utterances transcribed one by one, then of each joined recording of them."""
    recognizer = load_model(DEFAULT_MODEL, "cpu")
    decoder = recognizer.decoder(decoder_kind)
    references = [u.text for u in utterances]
    separate = [t.text for t in transcribe_files(recognizer, [u.audio_filepath for u in utterances], decoder)]
    rates = [error_rates(references, separate).wer]
    for whole in transcribe_files(recognizer, joined, decoder):
        assert whole.error is None, whole.error
        rates.append(error_rates([" ".join(references)], [whole.text]).wer)
    decoder.close()
    return rates


def run_measured(args: list[str]) -> tuple[float, float]:
    """Wall-clock seconds and peak RSS (MB) of a fresh process, by GNU time.

    Not ``os.wait4``'s own figure: a child forked from this process counts this process's pages
    until it execs, so a benchmark holding a model would read its own size as the command's.
    """
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.strip()}")
    seconds, kilobytes = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), float(kilobytes) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "runs/data/an4/dev.jsonl")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between utterances")
    parser.add_argument("--minutes", type=float, nargs="*", default=[10, 60])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="the model whose memory and speed are measured (data/model.onnx for the ONNX path)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asr-long-") as scratch:
        scratch = Path(scratch)
        utterances = dev_utterances(args.manifest, scratch)
        joined = [scratch / f"joined-{fill.replace(' ', '-')}.wav" for fill in GAPS]
        for path, fill in zip(joined, GAPS):
            seconds = write_joined(utterances, path, args.gap, fill)
        print(f"{len(utterances)} utterances joined with {args.gap:g} s gaps: {seconds / 60:.1f} min")
        for kind, label in (("greedy", "greedy"), (None, "default decoder (beam + LM)")):
            separate, *wholes = word_error_rates(utterances, joined, kind)
            for fill, whole in zip(GAPS, wholes):
                print(f"{label}, gaps of {fill}: WER one by one {separate:.2%}, joined {whole:.2%}, "
                      f"ratio {whole / separate:.3f}")
        for minutes in args.minutes:
            path = scratch / f"{minutes:g}min.wav"
            duration = write_joined(utterances, path, args.gap, "room tone", minutes * 60)
            command = [sys.executable, "-c", "import cli; cli.main()", "transcribe", str(path), "--model", str(args.model),
                       "--format", "json", "--no-progress"]
            runs = [run_measured(command) for _ in range(args.repeats)]
            rtf = statistics.median(wall for wall, _ in runs) / duration
            peak = max(rss for _, rss in runs)
            print(f"{minutes:g} min recording: peak RSS {peak:.0f} MB, real-time factor {rtf:.4f} "
                  f"(median of {len(runs)}, model loading included)")
            path.unlink()


if __name__ == "__main__":
    main()
