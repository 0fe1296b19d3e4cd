"""The training step and its harness, piece by piece: precision choice, resuming across precisions, out of
memory in backward, per-rank random streams, the GPU a process drives, and the per-step agreement of ranks."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest
import torch
import yaml

import asr.train
from asr.config import Config, load_config
from asr.data import Batch, collate, read_manifest, write_manifest
from asr.errors import AsrError
from asr.harness import Distributed, StopRequest, cuda_index, random_states, seed_rank, set_random_states
from asr.model import AcousticModel, RecurrentLayer
from asr.train import BF16_MIN_BATCH_SECONDS, StepResult, TrainState, agree_on_step, autocast_settings, train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny_manifest(an4_prepared, tmp_path_factory):
    utterances = sorted(read_manifest(an4_prepared / "train.jsonl"), key=lambda u: u.duration)[:6]
    path = tmp_path_factory.mktemp("tiny") / "train.jsonl"
    write_manifest(path, utterances)
    return path


def tiny_config(folder, manifest, **training):
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"conv_channels": 4, "rnn_layers": 1, "rnn_hidden": 16},
        "data": {"train": [str(manifest)], "batch_seconds": 6, "num_workers": 0},
        "training": {"epochs": 1, "warmup_steps": 2, "precision": "fp32", **training},
    }))
    return load_config(path)


def test_auto_precision_is_fp16_with_the_scaler_on_cuda_and_fp32_on_the_cpu(monkeypatch):
    """cuDNN's LSTM runs in fp16 under any CUDA autocast, so bf16 would train it unscaled."""
    monkeypatch.setattr(asr.train, "cpu_has_native_bf16", lambda: False)
    assert autocast_settings("auto", torch.device("cuda"), 20) == (torch.float16, True)
    assert autocast_settings("auto", torch.device("cpu"), 20) == (None, False)
    assert autocast_settings("auto", torch.device("cpu"), BF16_MIN_BATCH_SECONDS) == (None, False)
    assert autocast_settings("bf16", torch.device("cuda"), 20) == (torch.bfloat16, False)


def test_auto_precision_is_bf16_on_a_cpu_with_bf16_instructions_only_for_large_batches(monkeypatch):
    """Measured on a Xeon with AMX: bf16 autocast 0.86x fp32 at 20-second batches, 1.23x at 40."""
    monkeypatch.setattr(asr.train, "cpu_has_native_bf16", lambda: True)
    assert autocast_settings("auto", torch.device("cpu"), BF16_MIN_BATCH_SECONDS) == (torch.bfloat16, False)
    assert autocast_settings("auto", torch.device("cpu"), 20) == (None, False)
    assert autocast_settings("fp32", torch.device("cpu"), BF16_MIN_BATCH_SECONDS) == (None, False)


def test_recurrent_layers_follow_cpu_bf16_autocast():
    """The CPU twin of the CUDA test below: on the CPU, bf16 autocast runs the LSTM in bf16 as asked."""
    layer = RecurrentLayer("lstm", 8, 4, bidirectional=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 5, 8), torch.tensor([5, 3])).dtype == torch.bfloat16


@cuda
def test_recurrent_layers_run_in_fp32_not_unscaled_fp16_under_cuda_bf16_autocast():
    layer = RecurrentLayer("lstm", 8, 4, bidirectional=True).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 5, 8, device="cuda"), torch.tensor([5, 3], device="cuda")).dtype == torch.float32


def test_a_run_trained_without_the_scaler_resumes_with_it(tiny_manifest, tmp_path):
    """fp32 (or bf16) written, fp16 resumed (what ``auto`` means on a V100 or T4): the scaler starts afresh
    instead of failing on the empty state a disabled scaler saved."""
    train(tiny_config(tmp_path, tiny_manifest, precision="fp32"), tmp_path / "run", device="cpu")
    train(tiny_config(tmp_path, tiny_manifest, precision="fp16", epochs=2), tmp_path / "run", resume=True,
          device="cpu")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["scaler"]["scale"] > 0


def test_out_of_memory_in_backward_frees_the_failed_step_before_the_next(tiny_manifest, tmp_path, monkeypatch,
                                                                        caplog):
    forward, outputs = AcousticModel.forward, []

    def forward_whose_second_backward_fails(self, *args):
        if self.training and outputs:
            assert outputs[-1]() is None, f"step {len(outputs)}'s outputs are still alive"
        log_probs, lengths = forward(self, *args)
        if self.training:
            if len(outputs) == 1:
                def fail(grad):
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
                log_probs.register_hook(fail)
            outputs.append(weakref.ref(log_probs))
        return log_probs, lengths

    monkeypatch.setattr(AcousticModel, "forward", forward_whose_second_backward_fails)
    gc.disable()  # freed by reference counting, as on a GPU where the collector would come too late
    try:
        train(tiny_config(tmp_path, tiny_manifest, epochs=2), tmp_path / "run", device="cpu")
    finally:
        gc.enable()
    assert len(outputs) >= 3 and "ran out of memory" in caplog.text


def test_each_rank_draws_its_own_stream_and_a_resumed_step_a_new_one():
    draws = {}
    for rank, step in [(0, 0), (1, 0), (0, 40), (1, 40)]:
        seed_rank(7, Distributed(rank, 2), step)
        draws[rank, step] = torch.rand(4)
    assert len({tuple(d.tolist()) for d in draws.values()}) == 4


def test_random_states_round_trip_with_only_the_current_gpus_generator():
    states = random_states()
    expected = torch.rand(3)
    set_random_states(states)
    assert torch.equal(torch.rand(3), expected)
    assert states["cuda"] == ([] if not torch.cuda.is_available() else torch.cuda.get_rng_state().tolist())


def test_each_process_drives_its_local_gpu_or_the_one_it_was_given():
    assert cuda_index(3, 8) == 3
    assert cuda_index(3, 1) == 0  # CUDA_VISIBLE_DEVICES gave this process one GPU
    with pytest.raises(AsrError, match="sees 2 GPUs"):
        cuda_index(3, 2)


class TwoRanks(Distributed):
    """Rank 0 of two, the other rank's numbers given: the process group's arithmetic without the processes."""

    def __init__(self, other: list[float]):
        super().__init__(0, 2)
        self.other = other

    def gather_numbers(self, numbers, device):
        return [numbers, self.other]


def test_ranks_agree_on_stopping_on_the_slowest_clock_and_on_all_ranks_counts():
    model = AcousticModel(Config().model, 80, 29)
    state = TrainState(model, None, None, None, None, seconds_trained=10.0)
    run = SimpleNamespace(ddp=TwoRanks([1.0, 13.0, 30.0, 3, 9.0]), trainer=SimpleNamespace(device=torch.device("cpu")))
    result = StepResult(loss_sum=10.0, utterances=2, audio_seconds=6.0, grad_norm=1.0, learning_rate=1e-3, finite=True)
    stop, loss = agree_on_step(run, state, result, StopRequest(), seconds=1.0)
    assert stop  # the other rank was asked to stop
    assert state.seconds_trained == 13.0 and state.stats.seconds == 3.0  # its clock, the slower
    assert (state.stats.loss_sum, state.stats.utterances, state.stats.audio_seconds) == (40.0, 5, 15.0)
    assert loss == pytest.approx(8.0)


@cuda
def test_batches_are_pinned_for_asynchronous_copies():
    batch = collate([(torch.randn(100), torch.tensor([1, 2])), (torch.randn(80), torch.tensor([3]))])
    pinned = batch.pin_memory()
    assert isinstance(pinned, Batch) and all(t.is_pinned() for t in vars(pinned).values())
