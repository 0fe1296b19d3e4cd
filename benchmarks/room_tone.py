"""Greedy WER of a model on clips as they are and with room tone before and after them.

    python benchmarks/room_tone.py runs/data/fsdd-all/train.jsonl [--model data/model.pt] [--seconds 0.5] [--snr-db 30]

FSDD's recordings are trimmed tight to each word. A model that only ever hears them so
can learn the trimming as a cue to which corpus, and so which few speakers, it is
hearing, and then fails on the same words recorded with a pause around them, as a user
records them. This pads every clip at each end with up to --seconds of coloured noise,
--snr-db below the speech, also under the speech (asr.augment's room-tone padding,
drawn the same way on every run), and prints greedy WER on the clips as they are and
padded.
"""

from __future__ import annotations

import argparse

from asr.augment import AugmentConfig, Augmentation
from asr.checkpoint import DEFAULT_MODEL
from asr.evaluate import error_rates, model_outputs
from asr.recognizer import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--seconds", type=float, default=0.5, help="the most room tone at each end")
    parser.add_argument("--snr-db", type=float, default=30.0, help="speech power over room-tone power")
    args = parser.parse_args()

    recognizer = load_model(args.model, "cpu")
    decoder = recognizer.decoder("greedy")
    padding = Augmentation(AugmentConfig(pad_probability=1.0, pad_seconds=args.seconds,
                                         pad_snr_db=[args.snr_db, args.snr_db]), seed=0)
    for name, augmentation in (("as they are", None), (f"padded (up to {args.seconds:g} s, {args.snr_db:g} dB)", padding)):
        _, references, log_probs = model_outputs(recognizer, [args.manifest], augmentation=augmentation)
        hypotheses = [h.text for h in decoder.decode(log_probs, timings=False)]
        print(f"{name}: greedy WER {error_rates(references, hypotheses).wer:.2%} on {len(references)} utterances")


if __name__ == "__main__":
    main()
