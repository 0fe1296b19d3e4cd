"""Training end to end through the real command line: a tiny model overfits eight utterances.

`asr train` runs once per session (about 20 s on one core); evaluation, transcription and
resuming then use its output. The run is deterministic: one thread, fixed seed, no
SpecAugment, no dropout.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import pytest
import torch
import yaml

from asr.audio import load_audio
from asr.checkpoint import load_checkpoint
from asr.config import load_config
from asr.data import read_manifest, write_manifest
from asr.features import LogMelFrontend, prior_statistics
from asr.recognizer import load_model
from asr.records import keep_best_epochs
from asr.train import train
from helpers import assert_one_line_error, run_cli

# Eight short utterances: four AN4 words (both speakers) and four FSDD digits.
CHOSEN = {"an253-fash-b": "go", "an254-fash-b": "yes", "an199-mgah-b": "no", "an200-mgah-b": "start",
          "7_george_0": "seven", "3_jackson_0": "three", "0_jackson_0": "zero", "5_george_0": "five"}
EPOCHS = 45
AVERAGED = 3  # training.average_best of the run
REPEATS = 4  # each utterance appears four times an epoch: more steps per epoch, less per-epoch overhead


def config_text(train_manifest, dev_manifest, epochs: int, average_best: int = 0) -> str:
    return yaml.safe_dump({
        "features": {"freq_masks": 0, "time_masks": 0},
        "model": {"conv_channels": 8, "rnn_layers": 1, "rnn_hidden": 128, "dropout": 0.0},
        "data": {"train": [str(train_manifest)], "dev": [str(dev_manifest)], "batch_seconds": 1.5, "num_workers": 0},
        "training": {"epochs": epochs, "learning_rate": 0.02, "warmup_steps": 10, "final_lr_ratio": 0.3,
                     "weight_decay": 0.0, "grad_clip": 50.0, "precision": "fp32", "seed": 0,
                     "average_best": average_best},
    })


@pytest.fixture(scope="module")
def manifests(an4_prepared, fsdd_prepared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    pool = [u for prepared in (an4_prepared, fsdd_prepared) for split in ("train", "dev")
            for u in read_manifest(prepared / f"{split}.jsonl")]
    chosen = sorted((u for u in pool if u.audio_filepath.stem in CHOSEN), key=lambda u: u.audio_filepath.stem)
    assert [u.text for u in chosen] == [CHOSEN[u.audio_filepath.stem] for u in chosen] and len(chosen) == 8
    assert max(u.duration for u in chosen) <= 1.0
    write_manifest(folder / "tiny.jsonl", chosen)
    write_manifest(folder / "tiny_repeated.jsonl", chosen * REPEATS)
    return folder / "tiny_repeated.jsonl", folder / "tiny.jsonl"


def two_utterance_config(manifests, folder, precision: str = "fp32"):
    """A one-epoch config of a minute model on two of the tiny utterances, for runs that test the loop, not learning."""
    tiny = folder / "two.jsonl"
    write_manifest(tiny, read_manifest(manifests[1])[:2])
    config = folder / "config.yaml"
    config.write_text(config_text(tiny, tiny, 1).replace("rnn_hidden: 128", "rnn_hidden: 8")
                      .replace("precision: fp32", f"precision: {precision}"))
    return config


@pytest.fixture(scope="module")
def trained(manifests, tmp_path_factory):
    """(run folder, config file) of one `asr train` run."""
    folder = tmp_path_factory.mktemp("train")
    config = folder / "config.yaml"
    config.write_text(config_text(*manifests, EPOCHS, AVERAGED))
    result = run_cli("train", "--config", config, "--out", folder / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    (chosen,) = [line.removeprefix("best checkpoint: ") for line in result.stdout.splitlines()
                 if line.startswith("best checkpoint: ")]
    assert chosen in (str(folder / "run" / "best.pt"), str(folder / "run" / "average.pt"))
    return folder / "run", config


def read_log(run):
    with open(run / "log.csv", newline="") as log_file:
        return list(csv.DictReader(log_file))


@pytest.mark.slow
def test_training_writes_checkpoints_log_plot_and_config(trained):
    run, config = trained
    for name in ("last.pt", "best.pt", "log.csv", "training.png", "config.yaml"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(run / "config.yaml") == load_config(config)
    rows = read_log(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    steps = [int(r["step"]) for r in rows]
    assert steps[0] > 1 and all(b - a == steps[0] for a, b in zip(steps, steps[1:])), steps
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] / 10, losses
    assert all(0 <= float(r["dev_cer"]) <= 1 for r in rows)
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["step"]) == (EPOCHS, steps[-1])
    assert {"optimizer", "scaler", "seconds_trained", "random_states"} <= last.keys()
    assert "optimizer" not in load_checkpoint(run / "best.pt")


@pytest.mark.slow
def test_training_averages_the_epochs_with_the_lowest_dev_wer(trained):
    run, _ = trained
    rows = read_log(run)
    best = sorted(rows, key=lambda row: (float(row["dev_wer"]), -int(row["epoch"])))[:AVERAGED]
    kept = sorted(run.glob("epochs/epoch*.pt"))
    assert [int(path.stem.removeprefix("epoch")) for path in kept] == sorted(int(row["epoch"]) for row in best)
    states = [load_checkpoint(path)["model_state"] for path in kept]
    average = load_checkpoint(run / "average.pt")["model_state"]
    floats = [name for name, tensor in average.items() if tensor.is_floating_point()]
    assert floats and len(states[0][floats[0]].unique()) > 1
    for name in floats:
        assert torch.allclose(average[name], sum(state[name] for state in states) / AVERAGED, atol=1e-6), name
    assert not any(torch.equal(average[name], states[-1][name]) for name in floats if "weight" in name)


def test_keeping_best_epochs_prefers_the_later_on_a_tie_and_drops_stale_files(tmp_path):
    (tmp_path / "epochs").mkdir()
    torch.save({}, tmp_path / "epochs" / "epoch009.pt")  # left by a run killed after epoch 9, resumed at 3
    (tmp_path / "log.csv").write_text("epoch,dev_wer\n")
    for epoch, wer in enumerate(["0.5", "0.2", "0.3", "0.2", "nan"], start=1):
        with open(tmp_path / "log.csv", "a") as log_file:
            log_file.write(f"{epoch},{wer}\n")
        keep_best_epochs(tmp_path, {"model_state": {"w": torch.full((2,), float(epoch))}}, epoch, count=2)
    assert sorted(path.name for path in (tmp_path / "epochs").iterdir()) == ["epoch002.pt", "epoch004.pt"]


@pytest.fixture(scope="module")
def evaluated(trained, manifests, tmp_path_factory):
    run, _ = trained
    errors = tmp_path_factory.mktemp("evaluate") / "errors.jsonl"
    result = run_cli("evaluate", manifests[0], "--model", run / "best.pt", "--json", "--errors", errors)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, errors


@pytest.mark.slow
def test_overfit_model_transcribes_its_training_data(evaluated, manifests):
    result, _ = evaluated
    rates = json.loads(result.stdout)  # --json: stdout is exactly one JSON object
    assert rates["utterances"] == 8 * REPEATS
    assert rates["words"] == sum(len(text.split()) for text in CHOSEN.values()) * REPEATS
    assert rates["cer"] <= 0.05, rates
    assert rates["wer"] <= 0.25, rates


@pytest.mark.slow
def test_evaluate_writes_one_error_line_per_utterance(evaluated, manifests):
    _, errors = evaluated
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    utterances = read_manifest(manifests[0])
    assert len(lines) == len(utterances)
    for line, utterance in zip(lines, utterances):
        assert line["audio_filepath"] == str(utterance.audio_filepath)
        assert line["reference"] == utterance.text
        assert isinstance(line["hypothesis"], str)
    assert sum(line["hypothesis"] == line["reference"] for line in lines) >= 0.75 * len(lines)


@pytest.mark.slow
def test_transcribe_good_and_bad_files(trained, manifests, tmp_path):
    run, _ = trained
    utterances = read_manifest(manifests[1])
    good = [u for u in utterances if u.text in ("seven", "yes")]
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio\n")
    result = run_cli("transcribe", good[0].audio_filepath, bad, good[1].audio_filepath, "--model", run / "best.pt")
    assert_one_line_error(result, bad)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    for line, utterance in zip(lines, good):
        path, text = line.split("\t")
        assert path == str(utterance.audio_filepath)
        assert text == utterance.text
    assert str(bad) not in result.stdout


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch(trained, manifests, tmp_path):
    run, _ = trained
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    before = read_log(resumed)
    config = tmp_path / "more.yaml"
    config.write_text(config_text(*manifests, EPOCHS + 2))
    result = run_cli("train", "--config", config, "--out", resumed, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_log(resumed)
    assert rows[:EPOCHS] == before, "resuming rewrote the earlier epochs' log"
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 3))
    steps_per_epoch = int(before[0]["step"])
    assert [int(r["step"]) for r in rows[EPOCHS:]] == [int(before[-1]["step"]) + steps_per_epoch * k for k in (1, 2)]
    # The weights carried over: the loss goes on from where it was, far below the first epoch's.
    assert float(rows[EPOCHS]["train_loss"]) < 2 * float(before[-1]["train_loss"]) + 0.1
    assert float(rows[EPOCHS]["train_loss"]) < float(before[0]["train_loss"]) / 10
    assert load_checkpoint(resumed / "last.pt")["epoch"] == EPOCHS + 2
    assert load_config(resumed / "config.yaml").training.epochs == EPOCHS + 2


def test_resume_without_a_checkpoint_starts_afresh(manifests, tmp_path):
    """`--resume` into an empty folder should train from scratch, with a log that has its header."""
    train(load_config(two_utterance_config(manifests, tmp_path)), tmp_path / "run", resume=True, device="cpu")
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,"), f"log.csv has no header: {header!r}"
    rows = read_log(tmp_path / "run")
    assert [r["epoch"] for r in rows] == ["1"], (tmp_path / "run" / "log.csv").read_text()
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(manifests, tmp_path, monkeypatch, caplog, native):
    """Emulated bf16 is many times slower than fp32: a user who asks for it on such a CPU is told."""
    import asr.train

    monkeypatch.setattr(asr.train, "cpu_has_native_bf16", lambda: native)
    config = load_config(two_utterance_config(manifests, tmp_path, precision="bf16"))
    with caplog.at_level("WARNING", logger="asr.train"):
        asr.train.train(config, tmp_path / "run", device="cpu")
    assert caplog.text.count("no native bf16 instructions") == (0 if native else 1), caplog.text


def test_prior_statistics_are_measured_on_the_training_audio_and_kept_in_the_checkpoint(manifests, tmp_path):
    """features.prior_frames: the training set's per-bin statistics are measured before the first step, kept in
    the checkpoint, and the model loaded from it normalises with them."""
    config = load_config(two_utterance_config(manifests, tmp_path))
    config.features.prior_frames = 50.0
    train(config, tmp_path / "run", device="cpu")
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["feature_config"]
    utterances = read_manifest(manifests[1])[:2]
    waveforms = [torch.from_numpy(load_audio(u.audio_filepath)) for u in utterances]
    batches = [(waveform[None], torch.tensor([len(waveform)])) for waveform in waveforms]
    mean, std = prior_statistics(LogMelFrontend(config.features), batches)
    assert saved["prior_frames"] == 50.0
    torch.testing.assert_close(torch.tensor(saved["prior_mean"]), torch.tensor(mean))
    torch.testing.assert_close(torch.tensor(saved["prior_std"]), torch.tensor(std))
    frontend = load_model(tmp_path / "run" / "last.pt", "cpu").frontend
    torch.testing.assert_close(frontend.prior, torch.tensor([mean, std]))


def test_a_resumed_run_keeps_the_prior_statistics_it_trained_with(manifests, tmp_path, caplog):
    """Resuming takes features.prior_mean and prior_std from last.pt rather than measuring the audio again."""
    config = load_config(two_utterance_config(manifests, tmp_path))
    config.features.prior_frames = 50.0
    train(config, tmp_path / "run", device="cpu")
    first = load_checkpoint(tmp_path / "run" / "last.pt")["feature_config"]
    config.training.epochs = 2
    with caplog.at_level("INFO", logger="asr.train"):
        train(config, tmp_path / "run", resume=True, device="cpu")
    assert "measured on the training audio" not in caplog.text
    resumed = load_checkpoint(tmp_path / "run" / "last.pt")
    assert resumed["epoch"] == 2
    assert (resumed["feature_config"]["prior_mean"], resumed["feature_config"]["prior_std"]) == (
        first["prior_mean"], first["prior_std"])


def init_config(manifests, folder, init, **model):
    """A one-epoch config starting from checkpoint ``init``, without a features section (they come from it)."""
    values = yaml.safe_load(two_utterance_config(manifests, folder).read_text())
    del values["features"]
    values["model"].update(model)
    values["training"]["init"] = str(init)
    config = folder / "init.yaml"
    config.write_text(yaml.safe_dump(values))
    return config


def test_training_init_starts_from_the_checkpoints_weights_and_features(manifests, tmp_path):
    """training.init: the first step starts from the checkpoint's weights, and its feature config (prior
    statistics included) replaces the config's defaults."""
    from asr.harness import Distributed
    from asr.train import start_run

    base = load_config(two_utterance_config(manifests, tmp_path))
    base.features.prior_frames = 50.0
    train(base, tmp_path / "base", device="cpu")
    checkpoint = load_checkpoint(tmp_path / "base" / "last.pt")
    config = load_config(init_config(manifests, tmp_path, tmp_path / "base" / "last.pt"))
    run, state = start_run(config, tmp_path / "run", False, torch.device("cpu"), Distributed())
    run.records.close()
    for name, tensor in checkpoint["model_state"].items():
        torch.testing.assert_close(state.model.state_dict()[name], tensor, msg=name)
    assert dataclasses.asdict(state.features) == checkpoint["feature_config"]
    assert run.trainer.frontend.config.prior_mean == checkpoint["feature_config"]["prior_mean"]


def test_training_init_with_another_architecture_is_a_one_line_error(manifests, tmp_path):
    train(load_config(two_utterance_config(manifests, tmp_path)), tmp_path / "base", device="cpu")
    config = init_config(manifests, tmp_path, tmp_path / "base" / "last.pt", rnn_hidden=16)
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(result, "training.init", "model.rnn_hidden is 8 there, 16 in the config")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_training_freeze_keeps_the_named_layers_and_their_batch_norm_statistics(manifests, tmp_path):
    """training.freeze [conv, output]: after a run from a checkpoint, those weights and the conv's batch norm
    statistics are the checkpoint's, and the LSTM's have moved."""
    train(load_config(two_utterance_config(manifests, tmp_path)), tmp_path / "base", device="cpu")
    before = load_checkpoint(tmp_path / "base" / "last.pt")["model_state"]
    config = load_config(init_config(manifests, tmp_path, tmp_path / "base" / "last.pt"))
    config.training.freeze = ["conv", "output"]
    train(config, tmp_path / "run", device="cpu")
    after = load_checkpoint(tmp_path / "run" / "last.pt")["model_state"]
    assert any(name.startswith("conv.") and "running_mean" in name for name in after)
    for name, tensor in after.items():
        if name.startswith(("conv.", "output.")):
            torch.testing.assert_close(tensor, before[name], msg=name)
        elif name.startswith("rnns.0.") and "weight" in name:
            assert not torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("freeze, message", [
    (["rnns.7"], "'rnns.7' names no parameter of the model (its layers: conv, rnns.0 to rnns.0, output)"),
    (["conv", "rnns", "output"], "every parameter is frozen"),
])
def test_training_freeze_of_nothing_or_everything_is_a_one_line_error(manifests, tmp_path, freeze, message):
    config = two_utterance_config(manifests, tmp_path)
    values = yaml.safe_load(config.read_text())
    values["training"]["freeze"] = freeze
    config.write_text(yaml.safe_dump(values))
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(result, "training.freeze", message)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_training_init_refuses_a_features_section(manifests, tmp_path):
    config = two_utterance_config(manifests, tmp_path)
    values = yaml.safe_load(config.read_text())
    values["training"]["init"] = "base.pt"
    config.write_text(yaml.safe_dump(values))
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(result, "features come from training.init")
