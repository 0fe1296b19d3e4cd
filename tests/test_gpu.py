"""`asr train` and `asr transcribe` on a CUDA GPU: fp16 with the gradient scaler, bf16, a resume (to a
tolerance: CTC's backward and cuDNN are not deterministic on a GPU), one torchrun process on NCCL, and
transcription. Skipped without a GPU; scripts/gpu_check.sh runs them with the GPU benchmark."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import torch

from asr.checkpoint import load_checkpoint
from helpers import REPO, run_cli
from test_train_scale import finish, manifest, start_training, wait_for_steps, weights, write_config  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_training_on_the_gpu_learns(manifest, tmp_path, precision):  # noqa: F811
    config = write_config(tmp_path, manifest, precision=precision)
    code, stderr = finish(start_training(config, tmp_path / "run", "--device", "cuda"))
    assert code == 0, stderr[-3000:]
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (saved["scaler"].get("scale", 0) > 0) == (precision == "fp16")
    assert all(torch.isfinite(tensor).all() for tensor in saved["model_state"].values() if tensor.is_floating_point())


def test_a_resumed_gpu_run_ends_close_to_a_straight_one(manifest, tmp_path):  # noqa: F811
    config = write_config(tmp_path, manifest, precision="fp16", checkpoint_every=1)
    assert finish(start_training(config, tmp_path / "straight", "--device", "cuda"))[0] == 0
    process = start_training(config, tmp_path / "run", "--device", "cuda")
    wait_for_steps(process, tmp_path / "run", 4)
    os.killpg(process.pid, signal.SIGTERM)
    assert finish(process)[0] == 128 + signal.SIGTERM
    code, stderr = finish(start_training(config, tmp_path / "run", "--resume", "--device", "cuda"))
    assert code == 0, stderr[-3000:]
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "run")
    for name in straight:
        torch.testing.assert_close(resumed[name].float(), straight[name].float(), rtol=0.05, atol=0.05)


def test_one_torchrun_process_trains_on_nccl(manifest, tmp_path):  # noqa: F811
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1")
    config = write_config(tmp_path, manifest, precision="fp16", epochs=1)
    code, stderr = finish(start_training(config, tmp_path / "run", "--device", "cuda", launcher=launcher))
    assert code == 0, stderr[-3000:]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_transcription_on_the_gpu_equals_the_cpus():
    samples = sorted((REPO / "data" / "samples").glob("*.flac"))
    on = {device: run_cli("transcribe", "--device", device, "--decoder", "greedy", *samples) for device in ("cuda", "cpu")}
    assert on["cuda"].returncode == 0, on["cuda"].stderr
    assert on["cuda"].stdout == on["cpu"].stdout and "two nine six six two" in on["cuda"].stdout
