"""`asr adapt`: fine-tuning a model on a speaker's recordings, from a tiny base trained here on one FSDD speaker."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch

from asr.adapt import Recipe, adapt
from asr.checkpoint import DEFAULT_MODEL, attach_lm, load_checkpoint
from asr.config import Config, DataConfig, TrainingConfig
from asr.errors import AsrError
from asr.harness import TrainingInterrupted
from asr.lm import build_lm
from asr.model import ModelConfig
from asr.recognizer import load_model
from asr.train import train
from helpers import assert_one_line_error, run_cli

TINY_RECIPE = Recipe(passes=2, min_epoch_seconds=5.0, batch_seconds=2.0, max_minutes=0.0)


@pytest.fixture(scope="module")
def base(fsdd_prepared, tmp_path_factory):
    """A minute model trained briefly on FSDD's jackson, with an LM and decoder weights stored with it."""
    folder = tmp_path_factory.mktemp("base")
    config = Config(features=dataclasses.replace(Config().features, freq_masks=0, time_masks=0, prior_frames=50.0),
                    model=ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=16, dropout=0.0),
                    data=DataConfig(train=[str(fsdd_prepared / "train.jsonl")], batch_seconds=2.0, num_workers=0),
                    training=TrainingConfig(epochs=1, learning_rate=0.01, warmup_steps=1, precision="fp32"))
    path = train(config, folder / "run", device="cpu")
    build_lm(["zero one two three four five six seven eight nine"] * 3, 2, folder / "digits.arpa", progress=False)
    attach_lm(path, folder / "digits.arpa", 0.5, 1.0)
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adapt_writes_a_model_like_the_base_with_new_weights(base, fsdd_prepared, tmp_path):
    before = digest(base)
    result = adapt([fsdd_prepared / "dev.jsonl"], tmp_path / "me", base=base, recipe=TINY_RECIPE, device="cpu")
    assert result.model == tmp_path / "me" / "model.pt"
    assert sorted(p.name for p in (tmp_path / "me").iterdir()) == ["model.lm.arpa", "model.pt"]
    assert digest(base) == before
    adapted, original = load_checkpoint(result.model), load_checkpoint(base)
    for key in ("model_config", "feature_config", "vocabulary"):
        assert adapted[key] == original[key], key
    # Its LM (the base's or one of the recordings' transcripts, whichever read the held-back one better)
    # beside it, with the base's decoder weights.
    assert adapted["decoder"] == {**original["decoder"], "lm": "model.lm.arpa"}
    # Every layer but the output layer (Recipe.frozen) has trained.
    changed = {name.split(".")[0] for name, tensor in original["model_state"].items()
               if not torch.equal(adapted["model_state"][name], tensor)}
    assert changed == {"conv", "rnns"}
    # A tenth of the ten recordings held back, measured before and after, greedy and with the LM.
    assert result.trained_on == 9 and result.evaluated_on == "1 held-back recordings"
    assert result.before.beam is not None and result.after.beam is not None
    assert load_model(result.model, "cpu").decoder_settings["lm"] == str(tmp_path / "me" / "model.lm.arpa")


def test_interrupted_adaptation_leaves_no_model_and_the_base_untouched(base, fsdd_prepared, tmp_path, monkeypatch):
    import asr.adapt

    def interrupted(config, out, device=None):
        (out / "last.pt").parent.mkdir(parents=True, exist_ok=True)
        (out / "last.pt").write_bytes(b"half")
        raise TrainingInterrupted("interrupted by SIGINT", 2)

    before = digest(base)
    monkeypatch.setattr(asr.adapt, "train", interrupted)
    with pytest.raises(TrainingInterrupted, match="no model written") as raised:
        adapt([fsdd_prepared / "dev.jsonl"], tmp_path / "me", base=base, recipe=TINY_RECIPE, device="cpu")
    assert raised.value.exit_status == 130
    assert list((tmp_path / "me").iterdir()) == []
    assert digest(base) == before


def test_a_model_that_reads_the_held_back_recordings_worse_is_written_with_a_warning(base, fsdd_prepared, tmp_path,
                                                                                    monkeypatch, caplog):
    import asr.adapt
    from asr.adapt import Rates
    from asr.evaluate import ErrorRates

    def measured(recognizer, manifest, lms=()):  # the base reads 10% WER, the adapted model 50%
        wer = 0.5 if lms else 0.1
        return Rates(ErrorRates(wer, wer, 0, 0, 0, 10, 1), None), (lms[0] if lms else None)

    monkeypatch.setattr(asr.adapt, "measure", measured)
    with caplog.at_level("WARNING", logger="asr.adapt"):
        result = adapt([fsdd_prepared / "dev.jsonl"], tmp_path / "me", base=base, recipe=TINY_RECIPE, device="cpu")
    assert result.model.is_file()
    assert "reads 1 held-back recordings worse than the base (greedy WER 50.0% against 10.0%)" in caplog.text


def write_lines(path, entries) -> None:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_bad_inputs_are_one_line_errors(base, fsdd_prepared, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    audio = str(next(iter(load_lines(fsdd_prepared / "dev.jsonl")))["audio_filepath"])
    write_lines(tmp_path / "unusable.jsonl", [
        {"audio_filepath": "missing.wav", "duration": 1.0, "text": "one"},
        {"audio_filepath": str(fsdd_prepared / audio), "duration": 1.0, "text": "room 101"},
        {"audio_filepath": str(fsdd_prepared / audio), "duration": 1.0, "text": ""}])
    (tmp_path / "not-a-model.pt").write_text("hello")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.pt").write_bytes(b"a model")
    good = fsdd_prepared / "dev.jsonl"
    cases = [(["adapt", tmp_path / "empty.jsonl", "--out", tmp_path / "o", "--model", base],
              ["empty.jsonl", "no utterances"]),
             (["adapt", tmp_path / "unusable.jsonl", "--out", tmp_path / "o", "--model", base],
              ["unusable.jsonl", "no usable recording", "missing.wav"]),
             (["adapt", good, "--out", tmp_path / "o", "--model", tmp_path / "not-a-model.pt"],
              ["not-a-model.pt", "not an asr checkpoint"]),
             (["adapt", good, "--out", tmp_path / "taken", "--model", base], ["taken", "--force"])]
    for args, names in cases:
        assert_one_line_error(run_cli(*args), *names)
    assert (tmp_path / "taken" / "model.pt").read_bytes() == b"a model"
    assert not (tmp_path / "o").exists()


def base_with_commands_lm(folder):
    """The bundled model with an LM of AN4's commands alone (no digits, no letters) and its weights, and a recipe
    that barely moves the weights, its word list one word the recordings never say."""
    base = folder / "base.pt"
    shutil.copyfile(DEFAULT_MODEL, base)
    build_lm(["erase rubout stop yes no go"] * 3, 2, folder / "commands.arpa", progress=False)
    attach_lm(base, folder / "commands.arpa", 0.5, 1.0)
    (folder / "words.txt").write_text("aardvark\n")
    return base, dataclasses.replace(TINY_RECIPE, learning_rate=1e-7, lm_texts=[str(folder / "words.txt")])


@pytest.mark.slow
def test_on_a_tie_the_bases_lm_is_kept(fsdd_prepared, tmp_path):
    """The bundled model reads FSDD's digits whatever the LM (a confident model's pruned beam holds only the
    digit it hears), so the two LMs tie on the dev clips, and the base's, which knows the base's words, stays."""
    base, recipe = base_with_commands_lm(tmp_path)
    result = adapt([fsdd_prepared / "train.jsonl"], tmp_path / "me", base=base, dev=fsdd_prepared / "dev.jsonl",
                   recipe=recipe, device="cpu")
    assert not result.user_lm and result.before.beam.wer == result.after.beam.wer == 0.0
    assert (tmp_path / "me" / "model.lm.arpa").read_text() == (tmp_path / "commands.arpa").read_text()
    assert load_checkpoint(result.model)["decoder"] == {"lm": "model.lm.arpa", "alpha": 0.5, "beta": 1.0}


@pytest.mark.slow
def test_the_users_lm_of_their_transcripts_and_texts_replaces_the_bases_where_it_reads_better(an4_prepared,
                                                                                               tmp_path):
    """On AN4 sentences, beam search with the commands LM reads 11% WER and with one of their own transcripts 0%."""
    base, recipe = base_with_commands_lm(tmp_path)
    recordings = an4_prepared / "train.jsonl"
    result = adapt([recordings], tmp_path / "me", base=base, dev=recordings, recipe=recipe, device="cpu")
    assert result.user_lm and result.after.beam.wer < result.before.beam.wer
    unigrams = (tmp_path / "me" / "model.lm.arpa").read_text().split("\\2-grams:")[0]
    assert "\th" in unigrams and "\taardvark" in unigrams and "rubout" not in unigrams
    assert load_checkpoint(result.model)["decoder"] == {"lm": "model.lm.arpa", "alpha": 0.5, "beta": 1.0}


def test_an_unreadable_lm_text_stops_adaptation_before_training(base, fsdd_prepared, tmp_path, monkeypatch):
    import asr.adapt

    monkeypatch.setattr(asr.adapt, "train", lambda *args, **kwargs: pytest.fail("trained"))
    recipe = dataclasses.replace(TINY_RECIPE, lm_texts=[str(tmp_path / "missing.txt")])
    with pytest.raises(AsrError, match="missing.txt: no such text file"):
        adapt([fsdd_prepared / "dev.jsonl"], tmp_path / "me", base=base, recipe=recipe, device="cpu")
    assert not (tmp_path / "me" / "model.pt").exists()


def load_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_cli_adapts_with_the_default_recipe_and_reports_before_and_after(base, fsdd_prepared, tmp_path):
    result = run_cli("adapt", fsdd_prepared / "dev.jsonl", "--out", tmp_path / "me", "--model", base,
                     "--max-minutes", "0.05", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'me' / 'model.pt'}: adapted on 9 recordings; beam search uses ")
    assert lines[1].startswith("before: greedy WER ") and lines[2].startswith("after : greedy WER ")
    assert all(" beam WER " in line and line.endswith("on 1 held-back recordings") for line in lines[1:])
    assert load_model(tmp_path / "me" / "model.pt", "cpu").decoder_settings["alpha"] == 0.5
