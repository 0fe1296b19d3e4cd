"""Greedy WER of a model on clips as recorded and through other channels: treble raised or lowered, quieter, noisier,
said faster or slower.

    python benchmarks/channel.py runs/data/fsdd-jackson/jackson.jsonl [--model data/model.pt] [--shelf-db 8] [--gain-db -20] [--snr-db 20] [--tempo 1.3]

Another microphone, room or level colours a voice. Per-bin normalisation over a sentence
takes most of that away, but a lone word normalised with the training set's prior
(`features.prior_frames`) keeps it, and the model then has to have learnt to ignore it
(`features.random_gain_db`, `random_eq_db`), as it must a noise floor (`augment.coloured_noise`). This plays every clip through a
shelf that raises, then lowers, everything above --shelf-hz by --shelf-db, then at
--gain-db, then with white noise --snr-db under it, then --tempo times faster and slower with the pitch kept (how
much a speaker's pace matters), and prints greedy WER on each.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.signal

from asr.audio import SAMPLE_RATE
from asr.augment import add_noise, change_tempo, coloured_noise
from asr.checkpoint import DEFAULT_MODEL
from asr.data import AudioAugmentation
from asr.evaluate import error_rates, model_outputs
from asr.recognizer import load_model


def treble_shelf(gain_db: float, corner_hz: float) -> AudioAugmentation:
    """A dataset augmentation that scales the clip's content above ``corner_hz`` by ``gain_db``."""
    highpass = scipy.signal.butter(2, corner_hz, "highpass", fs=SAMPLE_RATE, output="sos")
    extra = 10 ** (gain_db / 20) - 1

    def apply(samples: np.ndarray, epoch: int, index: int) -> np.ndarray:
        return (samples + extra * scipy.signal.sosfilt(highpass, samples)).astype(np.float32)
    return apply


def white_noise(snr_db: float) -> AudioAugmentation:
    """A dataset augmentation that mixes white noise into each clip ``snr_db`` under its power, the same every run."""
    def apply(samples: np.ndarray, epoch: int, index: int) -> np.ndarray:
        rng = np.random.default_rng(index)
        return add_noise(samples, coloured_noise(len(samples), 0.0, rng), snr_db, rng)
    return apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--shelf-db", type=float, default=8.0, help="how far the treble is raised and lowered")
    parser.add_argument("--shelf-hz", type=float, default=1500.0, help="where the treble starts")
    parser.add_argument("--gain-db", type=float, default=-20.0, help="the level change")
    parser.add_argument("--snr-db", type=float, default=20.0, help="the white noise's level under the speech")
    parser.add_argument("--tempo", type=float, default=1.3, help="how much faster, then slower, the clips are said")
    args = parser.parse_args()

    recognizer = load_model(args.model, "cpu")
    decoder = recognizer.decoder("greedy")
    gain = 10 ** (args.gain_db / 20)
    channels = {
        "as recorded": None,
        f"treble +{args.shelf_db:g} dB": treble_shelf(args.shelf_db, args.shelf_hz),
        f"treble -{args.shelf_db:g} dB": treble_shelf(-args.shelf_db, args.shelf_hz),
        f"{args.gain_db:+g} dB": lambda samples, epoch, index: samples * np.float32(gain),
        f"white noise {args.snr_db:g} dB under it": white_noise(args.snr_db),
        f"{args.tempo:g} times faster": lambda samples, epoch, index: change_tempo(samples, args.tempo),
        f"{args.tempo:g} times slower": lambda samples, epoch, index: change_tempo(samples, 1 / args.tempo),
    }
    for name, channel in channels.items():
        _, references, log_probs = model_outputs(recognizer, [args.manifest], augmentation=channel)
        hypotheses = [h.text for h in decoder.decode(log_probs, timings=False)]
        print(f"{name}: greedy WER {error_rates(references, hypotheses).wer:.2%} on {len(references)} utterances",
              flush=True)


if __name__ == "__main__":
    main()
