"""Beam + LM WER on a dev manifest with alpha and beta tuned without the speaker being scored.

    python benchmarks/lm_weights_cross_validated.py runs/data/an4/dev.jsonl [--model data/model.pt] [--lm PATH]

`asr tune-lm` picks alpha and beta on a dev manifest, and the WER it reports on that
manifest is the best of 30 tries on it, so it flatters the model. This decodes the
manifest once at every pair of the grid, then scores each speaker with the pair that is
best on the other speakers (leave one speaker out) and prints the WER of all speakers so
scored beside the tuned WER and greedy decoding's. A speaker is the part of a file's name
that --speaker (a regular expression with one group) picks out: AN4's by default
("an76-fjam-b" is speaker fjam).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from asr.checkpoint import DEFAULT_MODEL
from asr.evaluate import error_rates, hypotheses_per_lm_weights, model_outputs
from asr.recognizer import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--lm", help="the model's own LM if omitted")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--alphas", default="0.1,0.25,0.4,0.5,0.75,1")
    parser.add_argument("--betas", default="0,0.5,1,2,3")
    parser.add_argument("--speaker", default=r"^[^-]+-([^-]+)-", help="regex whose group is the speaker")
    args = parser.parse_args()

    recognizer = load_model(args.model, "cpu")
    utterances, references, log_probs = model_outputs(recognizer, [args.manifest])
    speakers = [re.search(args.speaker, Path(u.audio_filepath).stem).group(1) for u in utterances]
    words = [len(reference.split()) for reference in references]

    def errors(hypotheses: list[str]) -> list[int]:
        return [error_rates([ref], [hyp]).word_errors for ref, hyp in zip(references, hypotheses)]

    greedy = errors([h.text for h in recognizer.decoder("greedy").decode(log_probs, timings=False)])
    decoder = recognizer.decoder("beam", lm=args.lm, beam_width=args.beam_width)
    alphas, betas = ([float(value) for value in values.split(",")] for values in (args.alphas, args.betas))
    errors_at = {pair: errors(hypotheses)
                 for pair, hypotheses in hypotheses_per_lm_weights(decoder, log_probs, alphas, betas).items()}
    decoder.close()
    grid = list(errors_at)

    by_speaker: dict[str, list[int]] = defaultdict(list)
    for index, speaker in enumerate(speakers):
        by_speaker[speaker].append(index)
    total_words = sum(words)
    cross_validated = 0
    for speaker, indices in sorted(by_speaker.items()):
        others = [i for i in range(len(utterances)) if speakers[i] != speaker]
        pair = min(grid, key=lambda p: sum(errors_at[p][i] for i in others))
        speaker_errors = sum(errors_at[pair][i] for i in indices)
        cross_validated += speaker_errors
        print(f"{speaker}: alpha {pair[0]:g}, beta {pair[1]:g} (best on the others): "
              f"{speaker_errors} errors in {sum(words[i] for i in indices)} words")
    tuned = min(grid, key=lambda p: sum(errors_at[p]))
    print(f"{len(utterances)} utterances, {len(by_speaker)} speakers, {total_words} words, beam width {args.beam_width}")
    print(f"greedy:                                    WER {sum(greedy) / total_words:.2%}")
    print(f"beam + LM, tuned on all (alpha {tuned[0]:g}, beta {tuned[1]:g}): WER {sum(errors_at[tuned]) / total_words:.2%}")
    print(f"beam + LM, each speaker tuned on the others: WER {cross_validated / total_words:.2%} "
          f"({1 - cross_validated / sum(greedy):.1%} fewer errors than greedy)")


if __name__ == "__main__":
    main()
