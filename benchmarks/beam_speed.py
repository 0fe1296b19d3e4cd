"""Beam search with an LM: asr's decoder against pyctcdecode called one utterance at a time.

    python benchmarks/beam_speed.py runs/data/an4/dev.jsonl runs/data/fsdd/dev.jsonl [--model data/model.pt]

The acoustic model runs once; both decoders then decode the same log-probabilities with
beam width 100 and the model's LM and tuned weights. The baseline is what pyctcdecode's
README shows: `build_ctcdecoder(...)` then `decoder.decode(logits)` per utterance with its
default settings. asr's `Decoder` collapses sure-blank runs, searches with its own lean
loop of pyctcdecode's algorithm (asr/beam_search.py; same pruning: its DecoderOptions
defaults, or the --token-min-logp, --beam-prune-logp and --blank-skip-prob given), keeps
LM scores across utterances, and decodes in parallel worker processes; like `decode`, it
returns texts only (no word timings). Both decoders are built before the clock starts;
the start-up of asr's worker pool is timed. Runs the two in turn, --repeats times, and
prints the medians, their ratio, how many transcripts differ, and both WERs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pyctcdecode import build_ctcdecoder

from asr.checkpoint import DEFAULT_MODEL
from asr.data import SpeechDataset, read_manifest
from asr.decoding import Decoder, DecoderOptions
from asr.evaluate import dataset_log_probs, error_rates
from asr.lm_check import check_lm
from asr.recognizer import load_model
from asr.text import normalize_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--token-min-logp", type=float, help="override asr's default (see DecoderOptions)")
    parser.add_argument("--beam-prune-logp", type=float, help="override asr's default")
    parser.add_argument("--blank-skip-prob", type=float, help="override asr's default")
    parser.add_argument("--workers", type=int, help="override asr's default (one per CPU core)")
    args = parser.parse_args()
    overrides = {name: getattr(args, name) for name in ("token_min_logp", "beam_prune_logp", "blank_skip_prob", "workers")
                 if getattr(args, name) is not None}

    recognizer = load_model(args.model, "cpu")
    settings = recognizer.decoder_settings
    if "lm" not in settings:
        parser.error(f"{args.model} has no LM stored with it (see asr tune-lm)")
    utterances = [u for manifest in args.manifests for u in read_manifest(manifest)]
    log_probs = dataset_log_probs(recognizer, SpeechDataset(utterances, recognizer.vocabulary))
    references = [normalize_text(u.text) for u in utterances]
    unigrams = check_lm(settings["lm"], recognizer.vocabulary)
    labels = [""] + recognizer.vocabulary.tokens[1:]
    baseline_decoder = build_ctcdecoder(labels, kenlm_model_path=settings["lm"], unigrams=unigrams,
                                        alpha=settings["alpha"], beta=settings["beta"])

    def baseline() -> tuple[float, list[str]]:
        started = time.perf_counter()
        texts = [baseline_decoder.decode(array) for array in log_probs]
        return time.perf_counter() - started, texts

    def ours() -> tuple[float, list[str]]:
        decoder = Decoder(recognizer.vocabulary, recognizer.frame_seconds,
                          DecoderOptions(kind="beam", beam_width=100, lm=settings["lm"], alpha=settings["alpha"],
                                         beta=settings["beta"], **overrides), unigrams)
        started = time.perf_counter()  # like the baseline's, the decoder is built beforehand; its pool starts in here
        texts = [h.text for h in decoder.decode(log_probs, timings=False)]
        seconds = time.perf_counter() - started
        decoder.close()
        return seconds, texts

    baseline_runs, our_runs = [], []
    for _ in range(args.repeats):  # alternated, so that the machine's drift reaches both alike
        baseline_runs.append(baseline())
        our_runs.append(ours())
    baseline_seconds = statistics.median(seconds for seconds, _ in baseline_runs)
    our_seconds = statistics.median(seconds for seconds, _ in our_runs)
    baseline_texts, our_texts = baseline_runs[0][1], our_runs[0][1]
    differing = sum(a != b for a, b in zip(baseline_texts, our_texts))
    print(f"{len(log_probs)} utterances, {sum(u.duration for u in utterances) / 60:.1f} min of audio, "
          f"beam width 100, LM {settings['lm']} (alpha {settings['alpha']}, beta {settings['beta']})")
    print(f"pyctcdecode decode() one at a time: {baseline_seconds:.2f} s "
          f"({1000 * baseline_seconds / len(log_probs):.1f} ms per utterance), "
          f"WER {error_rates(references, baseline_texts).wer:.2%}")
    print(f"asr Decoder:                        {our_seconds:.2f} s "
          f"({1000 * our_seconds / len(log_probs):.1f} ms per utterance), "
          f"WER {error_rates(references, our_texts).wer:.2%}")
    print(f"speed-up {baseline_seconds / our_seconds:.1f}x (median of {args.repeats} runs each); "
          f"{differing} of {len(log_probs)} transcripts differ")


if __name__ == "__main__":
    main()
