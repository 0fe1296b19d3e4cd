"""Spoken digits in many synthetic espeak-ng voices, for the README's experiment with them (not in any recipe).

    python scripts/synthetic_digits.py OUT [--per-digit 150] [--seed 0] [--sample-rate 8000]

Each clip draws an English accent, an espeak-ng voice variant (whispered and robotic ones
left out), a pitch and a speaking rate; it is trimmed to its speech (40 dB under its peak,
50 ms kept at each end), resampled to --sample-rate if given (FSDD's is 8 kHz), and
listed with its digit in OUT/train.jsonl. With espeak-ng 1.51 (Debian's espeak-ng package)
and the defaults: 1,500 clips, 14 minutes, 85 variants.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
from pathlib import Path

import librosa
import numpy as np
import soundfile
import soxr

from asr.corpora import DIGIT_WORDS

ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
LEFT_OUT = {"whisper", "whisperf", "Demonic", "UniRobot", "anikaRobot", "croak", "Tweaky", "fast"}


def voiced_variants() -> list[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variants = [line.split()[4].split("/")[1] for line in listing.splitlines()[1:]]
    return [v for v in variants if v not in LEFT_OUT and not v.startswith("robosoft")]


def say(word: str, voice: str, pitch: int, rate: int) -> tuple[np.ndarray, int]:
    """``word`` in espeak-ng's ``voice`` at ``pitch`` and ``rate`` (words a minute): trimmed samples and their rate."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", word],
                         capture_output=True, check=True).stdout
    samples, sample_rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    _, (start, end) = librosa.effects.trim(samples, top_db=40)
    margin = int(0.05 * sample_rate)
    return samples[max(0, start - margin):end + margin], sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-digit", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, help="resample to this rate (default: espeak-ng's 22,050 Hz)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng, variants = random.Random(args.seed), voiced_variants()
    with open(args.out / "train.jsonl", "w") as manifest:
        for take in range(args.per_digit):
            for digit in DIGIT_WORDS:
                voice = f"{rng.choice(ACCENTS)}+{rng.choice(variants)}"
                samples, sample_rate = say(digit, voice, rng.randint(15, 85), rng.randint(110, 190))
                if args.sample_rate:
                    samples, sample_rate = soxr.resample(samples, sample_rate, args.sample_rate), args.sample_rate
                path = args.out / f"{digit}_{take}.wav"
                soundfile.write(path, samples, sample_rate)
                duration = round(len(samples) / sample_rate, 3)
                manifest.write(json.dumps({"audio_filepath": path.name, "duration": duration, "text": digit,
                                           "voice": voice}) + "\n")
    print(f"{args.out / 'train.jsonl'}: {args.per_digit * len(DIGIT_WORDS)} clips")


if __name__ == "__main__":
    main()
