"""The ONNX path: `asr export MODEL OUT.onnx`, the numpy front end, and transcription on ONNX Runtime without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from asr.audio import load_audio  # noqa: E402
from asr.checkpoint import DEFAULT_MODEL  # noqa: E402
from asr.numpy_features import NumpyLogMel, mel_filters  # noqa: E402
from asr.onnx_export import export_onnx  # noqa: E402
from asr.onnx_model import load_onnx_model  # noqa: E402
from asr.recognizer import load_model  # noqa: E402
from asr.transcribe import transcribe_files  # noqa: E402
from helpers import AN4, FSDD, REPO, assert_one_line_error, run_cli, run_cli_listing_modules  # noqa: E402

SAMPLES = REPO / "data" / "samples"
CLIP = SAMPLES / "fsdd-5_nicolas_23.flac"  # the bundled model reads it as "five"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The bundled model exported to ONNX once for the module."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(DEFAULT_MODEL, out)
    return out


def real_batch() -> tuple[np.ndarray, np.ndarray]:
    """Real speech of different lengths (AN4 sentences, FSDD digits, an LJSpeech clip), zero-padded into one batch."""
    paths = sorted(AN4.rglob("*.raw"))[:3] + sorted(FSDD.rglob("*.wav"))[:2] + sorted(SAMPLES.glob("*.flac"))
    clips = [load_audio(path) for path in paths if path.suffix != ".raw"]
    clips += [np.frombuffer(path.read_bytes(), ">i2").astype(np.float32) / 32768 for path in paths if path.suffix == ".raw"]
    lengths = np.array([len(clip) for clip in clips])
    waveforms = np.zeros((len(clips), lengths.max()), np.float32)
    for row, clip in enumerate(clips):
        waveforms[row, :len(clip)] = clip
    return waveforms, lengths


def test_mel_filters_are_torchaudios():
    ours = mel_filters(16000, 512, 80)
    theirs = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(ours, theirs.double().numpy(), atol=1e-6)


def test_numpy_front_end_matches_the_torchaudio_one_on_real_speech():
    recognizer = load_model(device="cpu")  # its features pool each utterance with the training set's prior
    assert recognizer.frontend.config.prior_frames > 0
    waveforms, lengths = real_batch()
    assert len(set(lengths)) == len(lengths) > 5
    with torch.inference_mode():
        expected, expected_lengths = recognizer.frontend(torch.from_numpy(waveforms), torch.from_numpy(lengths))
    features, frame_lengths = NumpyLogMel(recognizer.frontend.config)(waveforms, lengths)
    np.testing.assert_array_equal(frame_lengths, expected_lengths.numpy())
    assert features.shape == expected.shape and features.dtype == np.float32
    np.testing.assert_allclose(features, expected.numpy(), atol=2e-3)


def test_onnx_model_gives_the_torch_models_log_probabilities(exported):
    torch_recognizer, onnx_recognizer = load_model(device="cpu"), load_onnx_model(exported)
    waveforms, lengths = real_batch()
    expected, expected_frames = torch_recognizer.log_probs(waveforms, lengths)
    log_probs, frames = onnx_recognizer.log_probs(waveforms, lengths)
    np.testing.assert_array_equal(frames, expected_frames)
    for row, count in enumerate(frames):  # past an utterance's frames the outputs are padding
        np.testing.assert_allclose(log_probs[row, :count], expected[row, :count], atol=2e-3)
    assert onnx_recognizer.frame_seconds == torch_recognizer.frame_seconds
    assert onnx_recognizer.vocabulary.tokens == torch_recognizer.vocabulary.tokens


def test_export_stores_the_recognizer_in_the_models_metadata_and_the_lm_beside_it(exported):
    metadata = {prop.key: prop.value for prop in onnx.load(exported, load_external_data=False).metadata_props}
    assert metadata["format"] == "asr-onnx-1"
    assert json.loads(metadata["vocabulary"]) == load_model(device="cpu").vocabulary.tokens
    assert len(json.loads(metadata["feature_config"])["prior_mean"]) == 80
    decoder = json.loads(metadata["decoder"])
    assert decoder["lm"] == "model.lm.arpa" and (exported.parent / decoder["lm"]).is_file()
    recognizer = load_onnx_model(exported)
    assert recognizer.decoder_settings == {**decoder, "lm": str(exported.parent / "model.lm.arpa")}
    assert recognizer.decoder().options.kind == "beam"


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_onnx_transcripts_equal_the_torch_models(exported, decoder):
    paths = sorted(SAMPLES.glob("*.flac"))
    results = {}
    for recognizer in (load_model(device="cpu"), load_onnx_model(exported)):
        text_decoder = recognizer.decoder(decoder, workers=1)
        results[type(recognizer).__name__] = [(r.text, [(w.start, w.end) for w in r.words])
                                              for r in transcribe_files(recognizer, paths, text_decoder)]
        text_decoder.close()
    assert results["Recognizer"] == results["OnnxRecognizer"]
    assert [text for text, _ in results["Recognizer"]] == ["yes", "two nine six six two", "five"]


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_transcribing_with_an_onnx_model_imports_no_torch(exported, tmp_path, decoder):
    result, modules = run_cli_listing_modules(tmp_path, "transcribe", CLIP, "--model", exported, "--decoder", decoder,
                                              "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == "five"
    assert [module for module in modules if module.split(".")[0] in ("torch", "torchaudio")] == []
    assert "onnxruntime" in modules


@pytest.mark.slow
def test_evaluate_runs_an_onnx_model(exported, an4_prepared):
    results = [run_cli("evaluate", an4_prepared / "dev.jsonl", "--model", model, "--decoder", "greedy", "--json")
               for model in (DEFAULT_MODEL, exported)]
    for result in results:
        assert result.returncode == 0, result.stderr
    assert json.loads(results[0].stdout) == json.loads(results[1].stdout)


@pytest.mark.slow
def test_export_via_the_command_line_chooses_onnx_by_suffix(tmp_path):
    result = run_cli("export", DEFAULT_MODEL, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert load_onnx_model(tmp_path / "out.onnx").vocabulary.tokens == load_model(device="cpu").vocabulary.tokens


def foreign_onnx_model(path: Path) -> Path:
    """A valid ONNX model that is not ours: one Identity node, no asr metadata."""
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "identity", [tensor("x", onnx.TensorProto.FLOAT, [1])],
                                   [tensor("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("make, problem", [
    (lambda path, exported: path.write_bytes(CLIP.read_bytes()), "not a readable ONNX model"),
    (lambda path, exported: path.write_bytes(exported.read_bytes()[:len(exported.read_bytes()) // 2]),
     "not a readable ONNX model"),
    (lambda path, exported: foreign_onnx_model(path), "not one written by `asr export`"),
    (lambda path, exported: None, "no such model file"),
])
def test_an_onnx_file_that_is_not_ours_or_damaged_is_one_line_error(exported, tmp_path, make, problem):
    model = tmp_path / "given.onnx"
    make(model, exported)
    line = assert_one_line_error(run_cli("transcribe", CLIP, "--model", model), model)
    assert problem in line


@pytest.mark.slow
def test_onnx_model_on_a_gpu_device_is_one_line_error(exported):
    assert_one_line_error(run_cli("transcribe", CLIP, "--model", exported, "--device", "cuda"), "--device", "CPU")


def test_int8_export_is_smaller_and_transcribes_the_samples_alike(exported, tmp_path):
    quantized = tmp_path / "int8.onnx"
    export_onnx(DEFAULT_MODEL, quantized, int8=True)
    assert quantized.stat().st_size < exported.stat().st_size / 3
    recognizer = load_onnx_model(quantized)
    assert recognizer.decoder_settings["lm"] == str(tmp_path / "int8.lm.arpa")
    paths = sorted(SAMPLES.glob("*.flac"))
    decoder = recognizer.decoder("greedy")
    assert [r.text for r in transcribe_files(recognizer, paths, decoder)] == ["yes", "two nine six six two", "five"]


@pytest.mark.slow
def test_int8_for_a_pt_is_one_line_error(tmp_path):
    assert_one_line_error(run_cli("export", DEFAULT_MODEL, tmp_path / "model.pt", "--int8"), "--int8")


TRAINING_ONLY = ("torch", "torchaudio", "librosa", "matplotlib", "onnx")


def installed_without(tmp_path: Path, left_out: tuple[str, ...]) -> Path:
    """A folder of links to everything installed but the packages ``left_out``: with ``python -S`` and it as
    PYTHONPATH, Python sees an install without them (without TRAINING_ONLY: a transcription-only install)."""
    site = Path(np.__file__).resolve().parent.parent
    folder = tmp_path / "site"
    folder.mkdir()
    for entry in site.iterdir():
        if entry.name.split("-")[0].split(".")[0].lower() not in left_out:
            (folder / entry.name).symlink_to(entry)
    return folder


def run_without_training_install(tmp_path: Path, *args: str | os.PathLike, left_out: tuple[str, ...] = TRAINING_ONLY
                                 ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(installed_without(tmp_path, left_out))])}
    return subprocess.run([sys.executable, "-S", "-c", "import cli; cli.main()", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


@pytest.mark.slow
def test_a_transcription_only_install_transcribes_with_the_bundled_onnx_model(tmp_path):
    result = run_without_training_install(tmp_path, "transcribe", *sorted(SAMPLES.glob("*.flac")))
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == ["yes", "two nine six six two", "five"]


@pytest.mark.slow
def test_a_command_that_needs_the_training_install_says_so_in_one_line(tmp_path):
    result = run_without_training_install(tmp_path, "train", "--config", REPO / "configs" / "default.yaml",
                                          "--out", tmp_path / "run")
    line = assert_one_line_error(result, "pip install 'asr[train]'")
    assert any(f"needs {module}," in line for module in ("torch", "torchaudio", "librosa", "matplotlib")), line


@pytest.mark.slow
def test_an_onnx_model_without_onnxruntime_installed_is_one_line_error(tmp_path):
    model = REPO / "data" / "model.onnx"
    result = run_without_training_install(tmp_path, "transcribe", CLIP, "--model", model, left_out=("onnxruntime",))
    assert_one_line_error(result, model, "pip install onnxruntime")


@pytest.mark.slow
def test_export_to_onnx_without_onnx_installed_is_one_line_error(tmp_path):
    result = run_without_training_install(tmp_path, "export", DEFAULT_MODEL, tmp_path / "out.onnx", left_out=("onnx",))
    assert_one_line_error(result, "needs onnx,", "pip install 'asr[train]'")


def test_the_bundled_onnx_model_is_the_bundled_model_in_int8():
    from asr.onnx_model import DEFAULT_ONNX_MODEL

    assert DEFAULT_ONNX_MODEL.stat().st_size < 10e6
    recognizer, reference = load_onnx_model(DEFAULT_ONNX_MODEL), load_model(device="cpu")
    assert recognizer.vocabulary.tokens == reference.vocabulary.tokens
    assert recognizer.frontend.config == reference.frontend.config
    assert recognizer.decoder_settings == reference.decoder_settings


def test_the_bundled_onnx_model_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    from asr.onnx_model import DEFAULT_ONNX_MODEL

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["asr"]
    assert any(DEFAULT_ONNX_MODEL.match(pattern) for pattern in patterns)


@pytest.mark.slow
def test_commands_that_need_a_checkpoint_refuse_an_onnx_model_in_one_line(exported, tmp_path, an4_prepared):
    dev = an4_prepared / "dev.jsonl"
    assert_one_line_error(run_cli("inspect", CLIP, "--out", tmp_path / "clip.png", "--model", exported), exported)
    assert_one_line_error(run_cli("tune-lm", dev, "--lm", REPO / "data" / "model.lm.arpa", "--model", exported),
                          exported, "--no-save")


@pytest.mark.slow
def test_tune_lm_searches_the_lm_weights_of_an_onnx_model_without_saving(exported, an4_prepared):
    result = run_cli("tune-lm", an4_prepared / "dev.jsonl", "--lm", REPO / "data" / "model.lm.arpa", "--model", exported,
                     "--alphas", "0.5", "--betas", "1", "--no-save")
    assert result.returncode == 0, result.stderr
    assert "best: alpha 0.5, beta 1" in result.stdout
