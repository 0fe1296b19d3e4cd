"""Adapting a trained model to a user's own recordings: ``asr.train`` run from the base's weights
(training.init) with a recipe sized to the recordings, and the result written as a model like the base,
its vocabulary, features and tuned decoder weights kept, with an LM of the user's words (below).

The recipe (docs/experiments.md, "Adapting to a speaker"): half the base's peak learning rate, every layer but
the output layer training, the base's own SpecAugment and random channel plus speed perturbation, batches of
10 s, and a fixed number of passes over the recordings, repeated within an epoch where they are few so that a
handful of clips still gets enough steps, in at most 15 minutes. Freezing the output layer holds forgetting
back a little: on 50 clips of a new FSDD speaker (nicolas, jackson; three seeds each), AN4 dev read 1.0-6.6
points better than with every layer training, and his other clips as well or better. Freezing more, decaying
the weights towards the base's (L2-SP), averaging them with the base's, or mixing the base's own kind of data
in (as long as the user's: 1.2 points of AN4 on average over four speakers, and worse WER on theirs) each did
less or traded his WER for AN4's.

The LM: a 3-gram of the user's transcripts and a word list (the bundled English words by default), with the
base's decoder weights, replaces the base's LM if beam search with it reads the held-back recordings (or --dev)
better. On a tie the base's stays, since it also knows the base's words: adapted to a new FSDD speaker's digits,
the model reads his other clips at 2.9% WER with either, and AN4 dev at 18.9% with the base's, 40.1% with his.
On held-out sentences of read English, the adapted model reads 99.5% WER with the base's and 67.4% with the user's.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from asr.audio import AudioError, audio_duration
from asr.augment import AugmentConfig
from asr.checkpoint import DEFAULT_MODEL, MODEL_KEYS, attach_lm, load_checkpoint, save_checkpoint
from asr.config import Config, DataConfig, TrainingConfig
from asr.data import Utterance, read_manifest, write_manifest
from asr.errors import AsrError
from asr.evaluate import ErrorRates, error_rates, model_outputs
from asr.harness import TrainingInterrupted
from asr.lm import build_lm, corpus_lines
from asr.model import ModelConfig
from asr.recognizer import Recognizer, checkpoint_configs, load_model
from asr.text import TextError, Vocabulary, normalize_text
from asr.train import train

log = logging.getLogger("asr.adapt")

ENGLISH_WORDS = DEFAULT_MODEL.parent / "lm" / "english_words.txt"  # 73,445 words; data/lm/README.md
BUNDLED_WEIGHTS = {"alpha": 0.4, "beta": 0.0}  # the bundled model's tuned LM weights, for a base without an LM
HOLD_BACK_SHARE = 0.1  # of the recordings, to measure before and after on when no dev manifest is given
SEED = 0


@dataclass
class Recipe:
    """How a model is adapted; the defaults are the measured recipe."""

    learning_rate: float = 1e-3  # the peak; the bundled model's was 2e-3
    # Adam's moments settle in a few steps from trained weights; the warm-up is counted in steps, not a share of
    # them, since a run stopped by max_minutes may take far fewer steps than its passes would.
    warmup_steps: int = 20
    passes: int = 10  # epochs: each recording heard this many times, at a speed drawn each time
    min_epoch_seconds: float = 150.0  # recordings repeated within an epoch up to this much audio: 150 steps at least
    batch_seconds: float = 10.0  # half the bundled model's: twice the steps in the same time
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    max_minutes: float = 15.0  # training time; the learning-rate decay fits in it (0: no limit)
    frozen: list[str] = field(default_factory=lambda: ["output"])  # training.freeze
    # The user's LM: their transcripts and these texts or word lists (a word a line), once each.
    lm_texts: list[str] = field(default_factory=lambda: [str(ENGLISH_WORDS)])
    lm_order: int = 3


@dataclass
class Rates:
    """Before or after: greedy, and beam search with the model's LM where it has one."""

    greedy: ErrorRates
    beam: ErrorRates | None


@dataclass
class Adaptation:
    model: Path
    trained_on: int  # recordings
    evaluated_on: str  # what before and after were measured on
    before: Rates | None  # None with nothing to measure on
    after: Rates | None
    user_lm: bool  # whether the model's LM is the one built from the user's transcripts (else the base's)


def adapt(manifests: Sequence[str | os.PathLike], out: str | os.PathLike, base: str | os.PathLike | None = None,
          dev: str | os.PathLike | None = None, recipe: Recipe = Recipe(), force: bool = False,
          device: str | None = None) -> Adaptation:
    """Fine-tune ``base`` (the bundled model by default) on the manifests' recordings and write OUT/model.pt.

    Nothing is written to OUT but the finished model (and its LM beside it): training runs in a temporary
    folder inside OUT, removed when it ends or is interrupted.
    """
    out = Path(out)
    target = out / "model.pt"
    if target.exists() and not force:
        raise AsrError(f"{target}: a model is there already (--force replaces it)")
    base = Path(base) if base is not None else DEFAULT_MODEL
    base_state = load_checkpoint(base)
    _, model_config, vocabulary = checkpoint_configs(base_state, str(base))
    recordings = usable_recordings(manifests, vocabulary)
    if dev is not None:
        held_back, evaluated_on = usable_recordings([dev], vocabulary), str(dev)
    else:
        recordings, held_back = hold_back(recordings)
        evaluated_on = f"{len(held_back)} held-back recordings"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".adapting-") as work:
        work = Path(work)
        repeats = math.ceil(recipe.min_epoch_seconds / sum(u.duration for u in recordings))
        write_manifest(work / "train.jsonl", recordings * repeats)
        if held_back:
            write_manifest(work / "dev.jsonl", held_back)
        # Built first, so that a text it cannot read stops adapting before the minutes are spent.
        users = user_lm(recordings, recipe, work / "user.arpa", base_state.get("decoder", BUNDLED_WEIGHTS))
        # The base's first, so that it is kept unless the user's reads better: it knows what the base knew.
        candidates = [{**base_state["decoder"], "lm": base.parent / base_state["decoder"]["lm"]}] \
            if "decoder" in base_state else []
        candidates.append(users)
        before = measure(load_model(base, device), work / "dev.jsonl")[0] if held_back else None
        config = adaptation_config(work / "train.jsonl", base, model_config, recipe)
        log.info("adapting %s on %d recordings (%.1f minutes)%s", base, len(recordings),
                 sum(u.duration for u in recordings) / 60, f", each {repeats} times an epoch" if repeats > 1 else "")
        try:
            trained = train(config, work / "run", device=device)
        except TrainingInterrupted as interrupted:
            raise TrainingInterrupted(f"interrupted: no model written to {out}; {base} is untouched",
                                      interrupted.exit_status - 128) from None
        save_checkpoint(work / "model.pt", {key: value for key, value in load_checkpoint(trained).items()
                                            if key in MODEL_KEYS})
        after, chosen = measure(load_model(work / "model.pt", device), work / "dev.jsonl", candidates) \
            if held_back else (None, candidates[0])
        if after is not None and after.greedy.wer > before.greedy.wer:
            log.warning("the adapted model reads %s worse than the base (greedy WER %.1f%% against %.1f%%): too few "
                        "recordings, or too few of some words, can teach it less than it forgets", evaluated_on,
                        100 * after.greedy.wer, 100 * before.greedy.wer)
        attach_lm(work / "model.pt", chosen["lm"], chosen["alpha"], chosen["beta"])
        (work / "user.arpa").unlink()
        for written in sorted(work.glob("model*"), key=lambda path: path.name == "model.pt"):  # model.pt last
            os.replace(written, out / written.name)
    return Adaptation(target, len(recordings), evaluated_on, before, after, chosen is users)


def usable_recordings(manifests: Sequence[str | os.PathLike], vocabulary: Vocabulary) -> list[Utterance]:
    """The manifests' utterances whose audio can be read and whose transcript the vocabulary writes; the
    others are counted in a warning, and an error if none is left."""
    utterances = [u for manifest in manifests for u in read_manifest(manifest)]
    usable, unusable = [], []
    for utterance in utterances:
        try:
            text = normalize_text(utterance.text)
            vocabulary.encode(text)
            if not text:
                raise TextError("empty transcript")
            audio_duration(utterance.audio_filepath)
        except (TextError, AudioError) as error:
            unusable.append(f"{utterance.audio_filepath} ({error})")
            continue
        usable.append(utterance)
    names = ", ".join(map(str, manifests))
    if not usable:
        raise AsrError(f"{names}: no usable recording: {len(unusable)} with unreadable audio or a transcript "
                       f"empty or outside the vocabulary (first: {unusable[0]})")
    if unusable:
        log.warning("%s: skipped %d of %d recordings with unreadable audio or a transcript empty or outside the "
                    "vocabulary (first: %s)", names, len(unusable), len(utterances), "; ".join(unusable[:3]))
    return usable


def hold_back(recordings: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """(to train on, to measure on): a seeded tenth held back, none from a single recording."""
    count = max(1, round(HOLD_BACK_SHARE * len(recordings))) if len(recordings) > 1 else 0
    chosen = set(random.Random(SEED).sample(range(len(recordings)), count))
    return ([u for i, u in enumerate(recordings) if i not in chosen],
            [u for i, u in enumerate(recordings) if i in chosen])


def adaptation_config(train_manifest: Path, base: Path, model_config: ModelConfig, recipe: Recipe) -> Config:
    """The recipe as an ``asr train`` config starting from ``base``; the features come from it (training.init)."""
    return Config(
        model=model_config,
        data=DataConfig(train=[str(train_manifest)], batch_seconds=recipe.batch_seconds, num_workers=1),
        augment=AugmentConfig(speeds=recipe.speeds),
        training=TrainingConfig(epochs=recipe.passes, learning_rate=recipe.learning_rate,
                                warmup_steps=recipe.warmup_steps, final_lr_ratio=0.05, precision="fp32", seed=SEED,
                                max_minutes=recipe.max_minutes, init=str(base), freeze=recipe.frozen),
    )


def user_lm(recordings: list[Utterance], recipe: Recipe, path: Path, weights: dict) -> dict:
    """An LM of the recordings' transcripts and the recipe's texts, written to ``path``, with ``weights``."""
    texts = chain((u.text for u in recordings), corpus_lines(recipe.lm_texts))
    build_lm(texts, recipe.lm_order, path, progress=False, source="the transcripts and --lm-text")
    return {"lm": path, "alpha": weights["alpha"], "beta": weights["beta"]}


def measure(recognizer: Recognizer, manifest: Path, lms: Sequence[dict] = ()) -> tuple[Rates, dict | None]:
    """Greedy and beam-search error rates on ``manifest``: beam search with the model's own LM, or with the
    best of ``lms`` ({"lm", "alpha", "beta"}; the first of equals) when they are given, which is returned too."""
    _, references, log_probs = model_outputs(recognizer, [manifest])

    def rates(kind: str, **lm) -> ErrorRates:
        decoder = recognizer.decoder(kind, **lm)
        try:
            return error_rates(references, [h.text for h in decoder.decode(log_probs, timings=False)])
        finally:
            decoder.close()

    greedy = rates("greedy")
    if lms:
        beam, best = min(((rates("beam", **lm), lm) for lm in lms), key=lambda scored: scored[0].wer)
        return Rates(greedy, beam), best
    return Rates(greedy, rates("beam") if recognizer.decoder_settings.get("lm") else None), None
