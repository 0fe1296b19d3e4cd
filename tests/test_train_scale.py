"""Training that survives interruption and spreads over processes: exact resume, signals, SIGKILL,
torchrun with gloo, gradient accumulation, out-of-memory batches, TensorBoard.

Every run is a tiny model on twelve real utterances with everything random switched on
(speed perturbation in a loader worker, SpecAugment, dropout) and bf16 autocast, so that
"bit for bit" means something.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from asr.checkpoint import load_checkpoint
from asr.config import load_config
from asr.data import read_manifest, write_manifest
from asr.harness import parameter_digest
from asr.train import train
from helpers import REPO

EPOCHS = 3


@pytest.fixture(scope="module")
def manifest(an4_prepared, fsdd_prepared, tmp_path_factory):
    utterances = [u for prepared in (an4_prepared, fsdd_prepared) for split in ("train", "dev")
                  for u in read_manifest(prepared / f"{split}.jsonl")]
    path = tmp_path_factory.mktemp("scale") / "train.jsonl"
    write_manifest(path, sorted(utterances, key=lambda u: u.duration)[:16])
    return path


def write_config(folder, manifest, norm: str = "none", **training) -> os.PathLike:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"conv_channels": 4, "rnn_layers": 1 if norm == "none" else 2, "rnn_hidden": 24,
                  "dropout": 0.2, "norm": norm},
        "data": {"train": [str(manifest)], "dev": [str(manifest)], "batch_seconds": 2.5, "num_workers": 1},
        "augment": {"speeds": [0.9, 1.0, 1.1]},
        "training": {"epochs": EPOCHS, "learning_rate": 0.01, "warmup_steps": 5, "precision": "bf16", "seed": 3,
                     **training},
    }))
    return path


def start_training(config, out, *extra: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "cli"] if launcher else [sys.executable, "-m", "cli"]
    return subprocess.Popen([*command, "train", "--config", str(config), "--out", str(out), *extra], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def steps_logged(out) -> int:
    path = out / "steps.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def wait_for_steps(process: subprocess.Popen, out, steps: int) -> None:
    deadline = time.monotonic() + 240
    while steps_logged(out) < steps:
        assert process.poll() is None, f"training ended early:\n{process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)


def weights(out) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "last.pt")["model_state"]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"weights differ: {different}"


@pytest.fixture(scope="module")
def straight(manifest, tmp_path_factory):
    """One uninterrupted run, checkpointing every step as the interrupted ones do."""
    folder = tmp_path_factory.mktemp("straight")
    code, stderr = finish(start_training(write_config(folder, manifest, checkpoint_every=1), folder / "run"))
    assert code == 0, stderr[-3000:]
    return folder / "run"


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as csv_file:
        return list(csv.DictReader(csv_file))


@pytest.mark.slow
def test_straight_run_learns_and_logs_every_epoch(straight):
    rows = read_rows(straight / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(float(r["dev_loss"]) > 0 for r in rows)
    steps = [int(r["step"]) for r in read_rows(straight / "steps.csv")]
    assert steps == list(range(1, len(steps) + 1))


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_resuming_is_bit_exact(straight, manifest, tmp_path, signal_number):
    config = write_config(tmp_path, manifest, checkpoint_every=1)
    process = start_training(config, tmp_path / "run")
    total_steps = int(read_rows(straight / "log.csv")[-1]["step"])
    wait_for_steps(process, tmp_path / "run", total_steps // 2)
    os.killpg(process.pid, signal_number)  # the whole group, as Ctrl-C in a terminal does
    code, stderr = finish(process)
    assert code == 128 + signal_number, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and signal.Signals(signal_number).name in lines[0] and "--resume" in lines[0], stderr
    assert "Traceback" not in stderr
    stopped_at = load_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert 0 < stopped_at < total_steps

    code, stderr = finish(start_training(config, tmp_path / "run", "--resume"))
    assert code == 0, stderr[-3000:]
    assert_identical(weights(straight), weights(tmp_path / "run"))
    assert read_rows(tmp_path / "run" / "steps.csv") == read_rows(straight / "steps.csv")
    resumed_log, straight_log = read_rows(tmp_path / "run" / "log.csv"), read_rows(straight / "log.csv")
    timing = ("epoch_seconds", "audio_seconds_per_second")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed_log] == \
           [{k: v for k, v in r.items() if k not in timing} for r in straight_log]


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint_and_an_exact_resume(straight, manifest, tmp_path):
    config = write_config(tmp_path, manifest, checkpoint_every=1)
    total_steps = int(read_rows(straight / "log.csv")[-1]["step"])
    for fraction in (0.3, 0.7):
        process = start_training(config, tmp_path / "run", *(["--resume"] if fraction > 0.3 else []))
        wait_for_steps(process, tmp_path / "run", int(total_steps * fraction))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        load_checkpoint(tmp_path / "run" / "last.pt")  # raises if half-written
    code, stderr = finish(start_training(config, tmp_path / "run", "--resume"))
    assert code == 0, stderr[-3000:]
    assert_identical(weights(straight), weights(tmp_path / "run"))


@pytest.mark.slow
def test_two_processes_under_torchrun_stay_identical_and_learn(manifest, tmp_path):
    config = write_config(tmp_path, manifest, precision="fp32")
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    code, stderr = finish(start_training(config, tmp_path / "run", launcher=launcher))
    assert code == 0, stderr[-4000:]
    digests = [line.rsplit("digest ", 1)[1].rstrip(")") for line in stderr.splitlines()
               if "weights identical on all 2 processes" in line]
    assert len(digests) == EPOCHS, stderr[-4000:]
    model = load_checkpoint(tmp_path / "run" / "last.pt")
    from asr.recognizer import build_recognizer

    assert parameter_digest(build_recognizer(model, torch.device("cpu")).model) == digests[-1]
    rows = read_rows(tmp_path / "run" / "log.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert len(model["random_states"]) == 2  # each rank's generators, for an exact resume


def test_gradient_accumulation_takes_one_step_per_group_of_batches(manifest, tmp_path):
    single = load_config(write_config(tmp_path, manifest, precision="fp32", epochs=1))
    train(single, tmp_path / "single", device="cpu")
    accumulated = load_config(write_config(tmp_path, manifest, precision="fp32", epochs=1, accumulate_batches=2))
    train(accumulated, tmp_path / "accumulated", device="cpu")
    single_steps = int(read_rows(tmp_path / "single" / "log.csv")[0]["step"])
    accumulated_steps = int(read_rows(tmp_path / "accumulated" / "log.csv")[0]["step"])
    assert accumulated_steps == (single_steps + 1) // 2


def test_a_batch_that_runs_out_of_memory_is_skipped_and_counted(manifest, tmp_path, monkeypatch, caplog):
    from asr.model import AcousticModel

    forward, calls = AcousticModel.forward, []

    def forward_failing_once(self, *args):
        calls.append(1)
        if len(calls) == 2 and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, *args)

    monkeypatch.setattr(AcousticModel, "forward", forward_failing_once)
    config = load_config(write_config(tmp_path, manifest, precision="fp32", epochs=1, tensorboard=True))
    train(config, tmp_path / "run", device="cpu")
    row = read_rows(tmp_path / "run" / "log.csv")[0]
    assert row["out_of_memory_batches"] == "1"
    assert "ran out of memory" in caplog.text
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_time_budget_carries_the_decay_to_its_end():
    from asr.train import learning_rate_factor

    assert learning_rate_factor(5, 10, 1000, 0.02) == pytest.approx(0.6)  # warming up
    assert learning_rate_factor(20, 10, 1000, 0.02) == pytest.approx(1.0, abs=1e-3)
    assert learning_rate_factor(20, 10, 1000, 0.02, time_used=0.5) == pytest.approx(0.51)
    assert learning_rate_factor(20, 10, 1000, 0.02, time_used=1.3) == pytest.approx(0.02)
    assert learning_rate_factor(1000, 10, 1000, 0.02, time_used=0.1) == pytest.approx(0.02)  # steps further along


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
RANK_ONE_PATCHES = '''
import os, sys, time
if os.environ["RANK"] == "1":
    patch = sys.argv.pop(1)
    if patch == "fast_clock":
        real, start = time.perf_counter, time.perf_counter()
        time.perf_counter = lambda: start + 2 * (real() - start)
    elif patch == "other_batches":
        import asr.data
        all_batches = asr.data.DurationBatchSampler.all_batches
        asr.data.DurationBatchSampler.all_batches = lambda self, epoch=None: all_batches(self, epoch)[::-1]
    elif patch == "no_shared_folder":
        import asr.train
        def not_here(path):
            raise FileNotFoundError(path)
        asr.train.load_checkpoint = not_here
else:
    sys.argv.pop(1)
import cli
sys.argv[0] = "asr"
cli.main()
'''


def start_patched(tmp_path, patch: str, config, out, *extra: str) -> subprocess.Popen:
    """Two gloo processes under torchrun, rank 1 with ``patch``: a clock running twice as fast, batches of its
    own, or no access to the output folder."""
    script = tmp_path / "rank_one_patched.py"
    script.write_text(RANK_ONE_PATCHES)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*TORCHRUN, str(script), patch, "train", "--config", str(config), "--out", str(out),
                             *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def digest_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "weights identical on all 2 processes" in line]


@pytest.mark.slow
@pytest.mark.parametrize("clock", ["same_clock", "fast_clock"])
def test_a_time_budget_under_torchrun_ends_every_rank_together(manifest, tmp_path, clock):
    """Ranks share the slowest clock for the budget and the learning rate, so they stop at the same step with
    the same weights, even when one rank's clock runs twice as fast."""
    config = write_config(tmp_path, manifest, precision="fp32", epochs=1000, max_minutes=0.04)
    code, stderr = finish(start_patched(tmp_path, clock, config, tmp_path / "run"))
    assert code == 0, stderr[-4000:]
    assert stderr.count("stopping: training.max_minutes") == 1, stderr[-4000:]
    rows = read_rows(tmp_path / "run" / "log.csv")
    assert 1 <= len(rows) < 1000 and len(digest_lines(stderr)) == len(rows)


@pytest.mark.slow
def test_ranks_that_compute_different_batches_stop_with_an_error(manifest, tmp_path):
    config = write_config(tmp_path, manifest, precision="fp32", epochs=1)
    code, stderr = finish(start_patched(tmp_path, "other_batches", config, tmp_path / "run"))
    assert code != 0 and "error: the 2 processes disagree on epoch 1's batches" in stderr, stderr[-4000:]


@pytest.mark.slow
def test_a_rank_without_the_output_folder_resumes_from_rank_zeros_checkpoint(manifest, tmp_path):
    code, stderr = finish(start_training(write_config(tmp_path, manifest, precision="fp32", epochs=1),
                                         tmp_path / "run", launcher=TORCHRUN))
    assert code == 0, stderr[-4000:]
    config = write_config(tmp_path, manifest, precision="fp32", epochs=2)
    code, stderr = finish(start_patched(tmp_path, "no_shared_folder", config, tmp_path / "run", "--resume"))
    assert code == 0, stderr[-4000:]
    assert "resuming at epoch 2" in stderr and len(digest_lines(stderr)) == 1


@pytest.mark.slow
def test_resume_under_torchrun_with_accumulation_step_checkpoints_and_batch_norm_is_exact(manifest, tmp_path):
    settings = {"precision": "fp32", "accumulate_batches": 2, "checkpoint_every": 1}
    straight_config = write_config(tmp_path / "straight", manifest, **settings, norm="batch")
    code, stderr = finish(start_training(straight_config, tmp_path / "straight" / "run", launcher=TORCHRUN))
    assert code == 0, stderr[-4000:]
    total_steps = int(read_rows(tmp_path / "straight" / "run" / "log.csv")[-1]["step"])

    config = write_config(tmp_path, manifest, **settings, norm="batch")
    process = start_training(config, tmp_path / "run", launcher=TORCHRUN)
    wait_for_steps(process, tmp_path / "run", total_steps // 2)
    os.killpg(process.pid, signal.SIGTERM)
    code, stderr = finish(process)
    assert code != 0 and "--resume" in stderr, stderr[-4000:]
    code, stderr = finish(start_training(config, tmp_path / "run", "--resume", launcher=TORCHRUN))
    assert code == 0, stderr[-4000:]
    assert_identical(weights(tmp_path / "straight" / "run"), weights(tmp_path / "run"))


@pytest.mark.slow
def test_resuming_with_another_process_count_goes_on_from_the_same_point_with_new_streams(manifest, tmp_path):
    config = write_config(tmp_path, manifest, precision="fp32", checkpoint_every=1)
    process = start_training(config, tmp_path / "run")
    wait_for_steps(process, tmp_path / "run", 3)
    os.killpg(process.pid, signal.SIGTERM)
    assert finish(process)[0] == 128 + signal.SIGTERM
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    code, stderr = finish(start_training(config, tmp_path / "run", "--resume", launcher=TORCHRUN))
    assert code == 0, stderr[-4000:]
    assert "written by 1 processes, not 2: each process draws new random numbers" in stderr
    if not saved["epoch_finished"]:
        assert f"goes on from batch {saved['epoch_stats']['batches'] // 2 + 1}" in stderr
    assert len(digest_lines(stderr)) == EPOCHS - saved["epoch"] + (0 if saved["epoch_finished"] else 1)
