"""Beam-search decoding (pyctcdecode, with and without a KenLM model) on synthetic log-probabilities.

Each matrix is written as a frame-by-frame path: '_' is blank, '|' space, a letter itself,
and a dict {token: probability} a frame with several candidates. Every frame's leftover
probability is spread evenly over the other tokens, low enough (below e^-5) that the beam
search never expands them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading

import numpy as np
import pytest
import torch

from asr.checkpoint import model_state, save_checkpoint
from asr.decoding import (DECODERS, Decoder, DecoderError, DecoderOptions, Hypothesis, compress_blanks, greedy_spans,
                          usable_cpus, word_confidence)
from asr.feature_config import FeatureConfig
from asr.lm import build_lm
from asr.lm_check import check_lm
from asr.model import AcousticModel, ModelConfig
from asr.text import Vocabulary
from helpers import SAMPLES, assert_one_line_error, run_cli

VOCABULARY = Vocabulary()
FRAME_SECONDS = 0.02
PEAK = 0.9
SURE_BLANK = 0.9999  # above the default blank_skip_prob (0.999), below 1 even in float32


def token(char: str) -> int:
    return VOCABULARY.tokens.index(" " if char == "|" else char)


def frame(spec: str | dict[str, float], peak: float = PEAK) -> np.ndarray:
    probs = spec if isinstance(spec, dict) else {spec: peak}
    row = np.full(len(VOCABULARY), (1 - sum(probs.values())) / (len(VOCABULARY) - len(probs)))
    for char, probability in probs.items():
        row[token(char)] = probability
    return row


def matrix(*frames: str | dict[str, float] | tuple[str, float]) -> np.ndarray:
    """(frames, vocabulary) float32 log-probabilities; a str argument is split into one frame per character,
    a (char, probability) tuple is one frame with that peak."""
    rows = []
    for spec in frames:
        if isinstance(spec, tuple):
            rows.append(frame(spec[0], spec[1]))
        elif isinstance(spec, dict):
            rows.append(frame(spec))
        else:
            rows.extend(frame(char) for char in spec)
    return np.log(np.array(rows, dtype=np.float64)).astype(np.float32).reshape(-1, len(VOCABULARY))


def decoder(kind: str = "beam", **options) -> Decoder:
    unigrams = check_lm(options["lm"], VOCABULARY) if options.get("lm") else None
    if options.get("lm"):
        options["lm"] = str(options["lm"])  # as Recognizer.decoder passes it
    return Decoder(VOCABULARY, FRAME_SECONDS, DecoderOptions(kind=kind, **options), unigrams)


def as_tuples(hypotheses: list[Hypothesis]) -> list:
    return [(h.text, [(w.word, w.start, w.end, w.confidence) for w in h.words]) for h in hypotheses]


def ambiguous(first: str = "a", second: str = "o", p_first: float = 0.4, p_second: float = 0.5,
              before: str = "__th_ee_|_c", after: str = "_tt_|_ss_aa_tt__") -> np.ndarray:
    """'the c?t sat' where the vowel frame is split between two letters (the second a little ahead)."""
    return matrix(before, {first: p_first, second: p_second}, after)


UTTERANCES = [
    matrix("__hh_ee_ll__l_oo__|__ww_oo_rr_ll_dd___"),
    matrix("_g_o_|_n_o_w_"),
    matrix("c_a_tt"),
    matrix("_don''t_|_ss_tt_oo_p_"),
]
TEXTS = ["hello world", "go now", "cat", "don't stop"]


# ---------------------------------------------------------------- without an LM


def test_the_matrices_spell_what_they_should_greedily():
    hypotheses = decoder("greedy").decode(UTTERANCES)
    assert [h.text for h in hypotheses] == TEXTS


def test_beam_without_lm_agrees_with_greedy_on_clear_input():
    greedy = decoder("greedy").decode(UTTERANCES)
    beam = decoder("beam", workers=1).decode(UTTERANCES)
    assert [h.text for h in beam] == TEXTS
    assert as_tuples(beam) == as_tuples(greedy)


# frames: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
#         _ _ g g _ o o _ | _ _  n  n  _  o  w  w  _
# Some letters are less sure than others (down to 0.4), as in a real model's output.
TIMED = matrix("__", ("g", 0.9), ("g", 0.6), "_", ("o", 0.8), ("o", 0.5), "_|__", ("n", 0.7), "n_", ("o", 0.95),
               ("w", 0.4), "w_")


def check_timed(hypothesis: Hypothesis) -> None:
    assert hypothesis.text == "go now"
    go, now = hypothesis.words
    assert (go.word, go.start, go.end) == ("go", 0.04, 0.14)  # frames 2 to 6 inclusive
    assert (now.word, now.start, now.end) == ("now", 0.22, 0.34)  # frames 11 to 16 inclusive
    # Geometric mean over the letters of each one's best posterior within the word's frames.
    assert go.confidence == pytest.approx(math.sqrt(0.9 * 0.8), abs=1e-3)
    assert now.confidence == pytest.approx((0.9 * 0.95 * 0.9) ** (1 / 3), abs=1e-3)
    for word in hypothesis.words:
        assert 0 <= word.confidence <= 1


def test_greedy_word_timings_and_confidences():
    assert len(TIMED) == 18
    check_timed(decoder("greedy").decode([TIMED])[0])


def test_beam_word_timings_and_confidences():
    """The beam's words are timed by the frames of their letters, as the greedy ones are.

    pyctcdecode keeps the frames of whichever path it happened to merge first, not of the
    most likely one, so its word frames can miss letters: here it ends "go" at frame 4,
    before its "o" (frames 5-6), and starts "now" at 12, after its "n" (frame 11).
    """
    (hypothesis,) = decoder("beam", workers=1).decode([TIMED])
    assert hypothesis.text == "go now"
    assert as_tuples([hypothesis]) == as_tuples(decoder("greedy").decode([TIMED]))
    check_timed(hypothesis)


def test_confidence_is_low_for_a_letter_against_the_evidence():
    log_probs = matrix("c_", ("a", 0.9), "_t")
    assert word_confidence(log_probs, VOCABULARY.encode("cat"), 0, 5) == pytest.approx(0.9, abs=1e-3)
    low = word_confidence(log_probs, VOCABULARY.encode("cot"), 0, 5)
    assert 0 < low < 0.2
    assert word_confidence(log_probs, [], 0, 5) == 0.0


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("log_probs", [
    np.zeros((0, len(VOCABULARY)), dtype=np.float32),
    matrix("__________"),
    matrix("_"),
    matrix("__||__|_"),  # only blanks and spaces
    matrix(*[("_", SURE_BLANK)] * 50),
], ids=["no-frames", "all-blank", "one-blank", "blank-and-space", "sure-blank"])
def test_nothing_to_say(kind, log_probs):
    (hypothesis,) = decoder(kind, workers=1).decode([log_probs])
    assert hypothesis.text == ""
    assert hypothesis.words == []


def test_empty_utterances_among_others():
    empty = np.zeros((0, len(VOCABULARY)), dtype=np.float32)
    batch = [empty, UTTERANCES[0], empty, UTTERANCES[1]]
    for workers in (1, 2):
        beam = decoder("beam", workers=workers)
        try:
            assert [h.text for h in beam.decode(batch)] == ["", TEXTS[0], "", TEXTS[1]], workers
        finally:
            beam.close()


def test_hotword_boosts_a_slightly_less_likely_word():
    log_probs = ambiguous()
    assert decoder("greedy").decode([log_probs])[0].text == "the cot sat"
    plain = decoder("beam", workers=1).decode([log_probs])[0]
    assert plain.text == "the cot sat"
    boosted = decoder("beam", workers=1, hotwords=["cat"]).decode([log_probs])[0]
    assert boosted.text == "the cat sat"
    cat, cot = boosted.words[1], plain.words[1]
    assert (cat.start, cat.end) == (cot.start, cot.end) == (0.2, 0.3)  # frames 10 to 14
    # The acoustics preferred 'o': the confidence says so.
    assert cat.confidence == pytest.approx((0.9 * 0.4 * 0.9) ** (1 / 3), abs=1e-3)
    assert cat.confidence < cot.confidence
    assert decoder("beam", workers=1, hotwords=["dog"]).decode([log_probs])[0].text == "the cot sat"
    # A hotword does not override clear evidence.
    clear = ambiguous(p_first=0.02, p_second=0.9)
    assert decoder("beam", workers=1, hotwords=["cat"], hotword_weight=1.0).decode([clear])[0].text == "the cot sat"


PARIS = matrix("__p_aa_r_", {"i": 0.4, "y": 0.5}, "_ss__")  # acoustically "parys", by a little


@pytest.mark.parametrize("hotword", ["paris", "Paris", "PARIS", "parís", "paris!", " «Paris» "])
def test_hotwords_are_normalised_like_transcripts(hotword):
    assert decoder("beam", workers=1).decode([PARIS])[0].text == "parys"
    assert decoder("beam", workers=1, hotwords=[hotword]).decode([PARIS])[0].text == "paris"


@pytest.mark.parametrize("hotword, problem", [("5th", "cannot be spelled"), ("naïve£", "'£'"), ("!!", "no letters")])
def test_a_hotword_the_model_cannot_spell_is_refused(hotword, problem):
    with pytest.raises(DecoderError, match=problem) as error:
        decoder("beam", workers=1, hotwords=[hotword])
    assert repr(hotword) in str(error.value)


def test_greedy_decoding_refuses_hotwords():
    with pytest.raises(DecoderError, match="greedy decoding takes no hotwords"):
        decoder("greedy", hotwords=["paris"])


# ---------------------------------------------------------------- with an LM


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "cats.arpa"
    sentences = ["the cat sat", "the cat ran", "the cat sat down", "a cat sat", "the dog ran", "a cot"] * 3
    build_lm(sentences, 3, path, progress=False)
    return path


def test_lm_resolves_an_ambiguous_word(lm):
    log_probs = ambiguous()  # acoustically "the cot sat", by a little
    assert decoder(lm=lm, alpha=0.0, beta=0.0, workers=1).decode([log_probs])[0].text == "the cot sat"
    assert decoder(lm=lm, alpha=2.0, beta=0.0, workers=1).decode([log_probs])[0].text == "the cat sat"
    # Clear acoustics win even with the LM against them.
    # A little LM weight tips the close call, but not clear acoustics.
    assert decoder(lm=lm, alpha=0.1, beta=0.0, workers=1).decode([log_probs])[0].text == "the cat sat"
    clear = ambiguous(p_first=0.02, p_second=0.9)
    assert decoder(lm=lm, alpha=0.1, beta=0.0, workers=1).decode([clear])[0].text == "the cot sat"


def test_lm_with_clear_input_keeps_timings(lm):
    log_probs = ambiguous(p_first=0.9, p_second=0.05)
    greedy = decoder("greedy").decode([log_probs])
    with_lm = decoder(lm=lm, alpha=1.0, beta=1.0, workers=1).decode([log_probs])
    assert as_tuples(with_lm) == as_tuples(greedy)


def batch_for_lm() -> list[np.ndarray]:
    return [ambiguous(), ambiguous(before="__th_ee_|_c", after="_t_|_rr_aa_nn_"), matrix("_a_|_c_"),
            ambiguous(p_first=0.45, p_second=0.46), UTTERANCES[1], ambiguous(p_first=0.9, p_second=0.05)]


def test_parallel_decoding_gives_the_same_results(lm):
    batch = batch_for_lm()
    for options in ({}, {"lm": lm, "alpha": 1.0, "beta": 0.5}):
        serial = decoder(workers=1, **options)
        parallel = decoder(workers=2, **options)
        try:
            expected = as_tuples(serial.decode(batch))
            assert as_tuples(parallel.decode(batch)) == expected, options
            assert parallel._pool is not None, "two workers and several utterances should use the pool"
            assert as_tuples(parallel.decode(batch)) == expected, "the pool is reused"
        finally:
            parallel.close()


def noisy_utterances(count: int, seed: int = 0) -> list[np.ndarray]:
    """Frame paths of words from the LM's sentences and a few others, each letter's frames split at
    random between it and a rival letter, so that beams branch, merge and get pruned."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "cot", "sat", "ran", "down", "a", "dog", "mat"]
    letters = "abcdefghijklmnopqrstuvwxyz'"
    utterances = []
    for _ in range(count):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 5))))
        frames: list[str | dict[str, float]] = ["_"] * int(rng.integers(0, 3))
        for char in text.replace(" ", "|"):
            rival = str(rng.choice([c for c in letters + "|_" if c != char]))
            for _ in range(int(rng.integers(1, 3))):
                own = float(rng.uniform(0.3, 0.95))
                frames.append({char: own, rival: float(rng.uniform(0.0, 1.0 - own)) * 0.9})
            frames.extend("_" * int(rng.integers(0, 3)))
        utterances.append(matrix(*frames))
    return utterances


@pytest.mark.slow
def test_search_gives_pyctcdecode_transcripts(lm):
    """asr's beam search is pyctcdecode's algorithm made lean: BeamSearchDecoderCTC.decode one
    utterance at a time, with its defaults, must give the same texts."""
    from pyctcdecode import build_ctcdecoder

    batch = noisy_utterances(60)
    labels = [""] + VOCABULARY.tokens[1:]
    for alpha, beta in ((0.5, 1.0), (2.0, 0.0), (1.0, 4.0)):
        reference = build_ctcdecoder(labels, kenlm_model_path=str(lm), unigrams=check_lm(lm, VOCABULARY),
                                     alpha=alpha, beta=beta)
        expected = [reference.decode(log_probs) for log_probs in batch]
        assert len(set(expected)) > 20, "the batch should exercise the search"
        ours = decoder(lm=lm, alpha=alpha, beta=beta, workers=1, blank_skip_prob=1.0)
        assert [h.text for h in ours.decode(batch, timings=False)] == expected, (alpha, beta)
        hotwords = ["cot", "dog"]
        expected = [reference.decode(log_probs, hotwords=hotwords) for log_probs in batch]
        ours = decoder(lm=lm, alpha=alpha, beta=beta, workers=1, blank_skip_prob=1.0, hotwords=hotwords)
        assert [h.text for h in ours.decode(batch, timings=False)] == expected, (alpha, beta, hotwords)


def test_set_lm_weights_reaches_the_workers(lm):
    batch = batch_for_lm()
    parallel = decoder(lm=lm, alpha=0.0, beta=0.0, workers=2)
    try:
        acoustic = as_tuples(parallel.decode(batch))
        assert acoustic == as_tuples(decoder(lm=lm, alpha=0.0, beta=0.0, workers=1).decode(batch))
        pool = parallel._pool
        parallel.set_lm_weights(2.0, 0.0)
        assert (parallel.options.alpha, parallel.options.beta) == (2.0, 0.0)
        weighted = as_tuples(parallel.decode(batch))
        assert parallel._pool is pool, "the workers take the new weights with their work, not a new pool"
        fresh = as_tuples(decoder(lm=lm, alpha=2.0, beta=0.0, workers=1).decode(batch))
        assert weighted == fresh
        assert weighted != acoustic, "alpha should have changed some hypotheses"
        assert weighted[0][0] == "the cat sat" and acoustic[0][0] == "the cot sat"
        parallel.set_lm_weights(0.0, 0.0)  # and back
        assert as_tuples(parallel.decode(batch)) == acoustic
    finally:
        parallel.close()


def test_an_lm_without_a_word_list_warns_and_its_words_restore_the_search(lm, tmp_path, caplog):
    """A binary KenLM model holds no word list: every word in progress then scores as unknown."""
    without_words = tmp_path / "cats.lm"  # no .arpa suffix: read as a binary model would be, words unknown
    shutil.copyfile(lm, without_words)
    options = DecoderOptions(kind="beam", lm=str(without_words), alpha=1.0, beta=0.5, workers=1, blank_skip_prob=1.0)
    batch = noisy_utterances(60)
    with caplog.at_level(logging.WARNING, logger="asr.decoding"):
        blind = [h.text for h in Decoder(VOCABULARY, FRAME_SECONDS, options, None).decode(batch, timings=False)]
    assert f"{without_words}: no word list" in caplog.text and "--unigrams" in caplog.text
    caplog.clear()
    words = check_lm(without_words, VOCABULARY, lm)  # --unigrams naming the ARPA file it came from
    with caplog.at_level(logging.WARNING, logger="asr.decoding"):
        informed = [h.text for h in Decoder(VOCABULARY, FRAME_SECONDS, options, words).decode(batch, timings=False)]
    assert caplog.text == ""
    expected = [h.text for h in decoder(lm=lm, alpha=1.0, beta=0.5, workers=1, blank_skip_prob=1.0).decode(batch, timings=False)]
    assert informed == expected
    assert blind != expected, "scoring every partial word as unknown should change some transcripts"


def test_cli_unigrams_needs_an_lm_and_a_readable_word_list(tiny_model, lm, tmp_path):
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tiny_model, "--unigrams", lm)
    assert_one_line_error(result, "--unigrams", "only to beam search with an LM")
    missing = tmp_path / "words.txt"
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tiny_model, "--lm", lm, "--unigrams", missing)
    assert_one_line_error(result, missing, "no such word list")


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)  # a container's share
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's
    assert usable_cpus() == 3
    assert decoder(workers=0)._worker_count == 3


def test_worker_pool_is_not_forked_from_a_threaded_process(lm):
    """Reader threads run while the pool starts (transcribe's); a forked worker could inherit a lock one
    of them held and hang, so workers start from the forkserver and build their own decoder."""
    stop = threading.Event()
    reader = threading.Thread(target=stop.wait)
    reader.start()
    parallel = decoder(lm=lm, alpha=1.0, beta=0.5, workers=2)
    try:
        batch = batch_for_lm()
        assert as_tuples(parallel.decode(batch)) == as_tuples(decoder(lm=lm, alpha=1.0, beta=0.5, workers=1).decode(batch))
        assert parallel._pool._ctx.get_start_method() in ("forkserver", "spawn")
    finally:
        parallel.close()
        stop.set()
        reader.join()


def test_set_lm_weights_validates():
    beam = decoder(workers=1)
    with pytest.raises(DecoderError, match="--alpha"):
        beam.set_lm_weights(6.0, 0.0)
    with pytest.raises(DecoderError, match="--beta"):
        beam.set_lm_weights(1.0, -6.0)
    assert (beam.options.alpha, beam.options.beta) == (DecoderOptions.alpha, DecoderOptions.beta)


# ---------------------------------------------------------------- blank compression


def test_compress_blanks_keeps_the_first_frame_of_each_sure_blank_run():
    sure, letter = ("_", SURE_BLANK), "a"
    log_probs = matrix(sure, sure, sure, letter, sure, sure, letter, letter, sure, ("_", 0.5), sure, sure)
    frames, kept = compress_blanks(log_probs, VOCABULARY.blank, 0.999)
    assert kept.tolist() == [0, 3, 4, 6, 7, 8, 9, 10]
    np.testing.assert_array_equal(frames, log_probs[kept])
    # Nothing is sure enough for probability 1: log(1) = 0 is above every blank log-probability here.
    frames, kept = compress_blanks(log_probs, VOCABULARY.blank, 1.0)
    assert kept.tolist() == list(range(len(log_probs)))
    # No frames, no kept frames.
    frames, kept = compress_blanks(log_probs[:0], VOCABULARY.blank, 0.999)
    assert frames.shape == (0, len(VOCABULARY)) and kept.tolist() == []


def long_silences(text: str, silence: int = 40) -> np.ndarray:
    """Letters of ``text`` (one frame each) with long sure-blank runs between them."""
    parts = [("_", SURE_BLANK)] * silence
    for char in text:
        parts += [char, *[("_", SURE_BLANK)] * silence]
    return matrix(*parts)


def test_compression_keeps_doubled_letters_apart():
    log_probs = long_silences("hello")  # h _ e _ l _ l _ o: the blank between the l's is sure
    frames, kept = compress_blanks(log_probs, VOCABULARY.blank, 0.999)
    assert len(frames) == 11  # five letters, six runs of blank, one frame each
    assert " ".join(w for w, _, _ in greedy_spans(frames, VOCABULARY)) == "hello"
    (hypothesis,) = decoder(workers=1).decode([log_probs])
    assert hypothesis.text == "hello"
    word = hypothesis.words[0]
    assert (word.start, word.end) == (0.8, 4.1)  # frames 40 to 204 of the uncompressed matrix


def test_compressed_search_equals_the_uncompressed_one(lm):
    batch = [long_silences("go"), long_silences("hello", 7), matrix("__", *[("_", SURE_BLANK)] * 30, "c_a_t",
                                                                   *[("_", SURE_BLANK)] * 30, "|_s_a_t_")]
    batch.append(np.concatenate([batch[2], matrix("|"), ambiguous(), matrix("|"), batch[0]]))
    assert all(len(compress_blanks(a, 0, 0.999)[1]) < len(a) for a in batch), "compression should drop frames"
    for options in ({}, {"lm": lm, "alpha": 1.0, "beta": 1.0}):
        compressed = decoder(workers=1, **options)
        uncompressed = decoder(workers=1, blank_skip_prob=1.0, **options)
        assert as_tuples(compressed.decode(batch)) == as_tuples(uncompressed.decode(batch)), options
    assert [h.text for h in compressed.decode(batch)] == ["go", "hello", "cat sat", "cat sat the cat sat go"]
    assert as_tuples(decoder(workers=1).decode(batch)) == as_tuples(decoder("greedy").decode(batch))


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("options, option", [
    ({"alpha": -0.1}, "--alpha"),
    ({"alpha": 5.01}, "--alpha"),
    ({"alpha": float("nan")}, "--alpha"),
    ({"beta": -5.5}, "--beta"),
    ({"beta": 10.5}, "--beta"),
    ({"beam_width": 0}, "--beam-width"),
    ({"beam_width": -3}, "--beam-width"),
    ({"kind": "viterbi"}, "unknown decoder 'viterbi'"),
])
def test_invalid_options(options, option):
    settings = DecoderOptions(**{"kind": "beam", **options})
    with pytest.raises(DecoderError, match=option):
        settings.validate()
    with pytest.raises(DecoderError, match=option):
        Decoder(VOCABULARY, FRAME_SECONDS, settings)


@pytest.mark.parametrize("options", [{"alpha": 0.0, "beta": -5.0}, {"alpha": 5.0, "beta": 10.0}, {"beam_width": 1},
                                     {"kind": "greedy"}])
def test_limits_are_valid(options):
    DecoderOptions(**{"kind": "beam", **options}).validate()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny checkpoint: enough to get as far as building the decoder."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=16, dropout=0.0),
                          FeatureConfig().n_mels, len(VOCABULARY))
    path = tmp_path_factory.mktemp("tiny") / "model.pt"
    save_checkpoint(path, model_state(model.eval(), FeatureConfig(), VOCABULARY))
    return path


@pytest.mark.slow
def test_cli_refuses_hotwords_with_greedy_decoding_and_unspellable_hotwords(tiny_model):
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tiny_model, "--decoder", "greedy",
                     "--hotword", "paris")
    assert_one_line_error(result, "--hotword", "greedy")
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tiny_model, "--decoder", "beam",
                     "--hotword", "5th")
    assert_one_line_error(result, "--hotword", "'5th'")
    assert result.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("option, values", [("--alphas", "0,9"), ("--betas", "1,nan")])
def test_cli_tune_lm_checks_its_grid_before_reading_the_manifest(tiny_model, lm, tmp_path, option, values):
    missing = tmp_path / "missing.jsonl"  # read only after the grid is checked
    result = run_cli("tune-lm", missing, "--lm", lm, "--model", tiny_model, option, values, "--no-save")
    assert_one_line_error(result, option, f"not {values.split(',')[1]}")


@pytest.mark.slow
def test_cli_refuses_an_out_of_range_alpha(tiny_model, lm):
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", tiny_model, "--lm", lm, "--alpha", "9")
    assert_one_line_error(result, "--alpha", "not 9")
    assert result.stdout == ""
