"""A training run's records in its folder: the per-step and per-epoch CSV logs, TensorBoard, the plot, and the
weights of the best epochs with their average.

Only rank 0 keeps records; on other ranks ``RunRecords(active=False)`` does nothing.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.checkpoint import average_weights, save_checkpoint
from asr.errors import ConfigError

EPOCH_FIELDS = ["epoch", "step", "train_loss", "dev_loss", "dev_wer", "dev_cer", "learning_rate", "epoch_seconds",
                "audio_seconds_per_second", "dropped_utterances", "grad_norm_median", "grad_norm_max", "clip_fraction",
                "skipped_steps", "out_of_memory_batches"]
STEP_FIELDS = ["epoch", "step", "loss", "grad_norm", "clipped", "learning_rate"]
TENSORBOARD_EPOCH_FIELDS = ("train_loss", "dev_loss", "dev_wer", "dev_cer", "audio_seconds_per_second")

log = logging.getLogger("asr.train")


@dataclass
class EpochStats:
    """What an epoch's log row sums up, over all ranks; kept in step checkpoints so a resumed epoch logs the
    whole epoch."""

    batches: int = 0  # batches taken from this rank's share of the epoch, including skipped ones
    seconds: float = 0.0  # the slowest rank's
    audio_seconds: float = 0.0
    loss_sum: float = 0.0
    utterances: int = 0
    grad_norms: list[float] = field(default_factory=list)
    non_finite: int = 0
    out_of_memory: int = 0


@dataclass
class DevResult:
    loss: float = math.nan  # CTC loss per utterance
    wer: float = math.nan
    cer: float = math.nan


def epoch_row(epoch: int, step: int, stats: EpochStats, dev: DevResult, learning_rate: float, dropped: int,
              grad_clip: float) -> dict[str, Any]:
    return {"epoch": epoch, "step": step,
            "train_loss": stats.loss_sum / stats.utterances if stats.utterances else math.nan,
            "dev_loss": dev.loss, "dev_wer": dev.wer, "dev_cer": dev.cer, "learning_rate": learning_rate,
            "epoch_seconds": stats.seconds, "audio_seconds_per_second": stats.audio_seconds / max(stats.seconds, 1e-9),
            "dropped_utterances": dropped,
            "grad_norm_median": statistics.median(stats.grad_norms) if stats.grad_norms else math.nan,
            "grad_norm_max": max(stats.grad_norms, default=math.nan),
            "clip_fraction": sum(n > grad_clip for n in stats.grad_norms) / max(1, len(stats.grad_norms)),
            "skipped_steps": stats.non_finite, "out_of_memory_batches": stats.out_of_memory}


class RunRecords:
    """OUT/steps.csv (a row per optimiser step), OUT/log.csv (a row per epoch), OUT/training.png and, with
    ``tensorboard``, OUT/tensorboard."""

    def __init__(self, out_dir: Path, grad_clip: float, tensorboard: bool, active: bool = True):
        self.out_dir = out_dir
        self.grad_clip = grad_clip
        self.active = active
        self.tensorboard = open_tensorboard(out_dir) if tensorboard and active else None
        self.step_file = None

    def start(self, resumed_step: int | None, resumed_epoch: int) -> None:
        """New logs for a new run; for a resumed one, the rows written after its checkpoint (the process was
        killed before the next one) are dropped, to be written again."""
        if not self.active:
            return
        if resumed_step is None:
            (self.out_dir / "log.csv").write_text(",".join(EPOCH_FIELDS) + "\n")
            (self.out_dir / "steps.csv").write_text(",".join(STEP_FIELDS) + "\n")
        else:
            keep_csv_rows(self.out_dir / "steps.csv", lambda row: int(row["step"]) <= resumed_step)
            keep_csv_rows(self.out_dir / "log.csv", lambda row: int(row["epoch"]) < resumed_epoch)
        self.step_file = open(self.out_dir / "steps.csv", "a", newline="")

    def step(self, epoch: int, step: int, loss: float, grad_norm: float, learning_rate: float) -> None:
        if not self.active:
            return
        csv.writer(self.step_file).writerow([epoch, step, f"{loss:.4f}", f"{grad_norm:.4f}",
                                             int(grad_norm > self.grad_clip), f"{learning_rate:.3g}"])
        if self.tensorboard is not None:
            for name, value in (("loss", loss), ("grad_norm", grad_norm), ("learning_rate", learning_rate)):
                self.tensorboard.add_scalar(f"train/{name}", value, step)

    def flush(self) -> None:
        """Before a checkpoint: the step rows it covers are on disk."""
        if self.step_file is not None:
            self.step_file.flush()

    def epoch(self, row: dict[str, Any]) -> None:
        """The epoch's row in log.csv, the plot and TensorBoard, and its summary in the log."""
        if not self.active:
            return
        log.info("epoch %d: train loss %.3f, dev loss %.3f, WER %.2f%%, CER %.2f%%, %.0f s (%.1f s of audio per "
                 "second), gradient norm median %.2f, clipped %.0f%% of steps%s%s", row["epoch"], row["train_loss"],
                 row["dev_loss"], 100 * row["dev_wer"], 100 * row["dev_cer"], row["epoch_seconds"],
                 row["audio_seconds_per_second"], row["grad_norm_median"], 100 * row["clip_fraction"],
                 f", {row['skipped_steps']} non-finite steps skipped" if row["skipped_steps"] else "",
                 f", {row['out_of_memory_batches']} batches out of memory" if row["out_of_memory_batches"] else "")
        self.flush()
        with open(self.out_dir / "log.csv", "a", newline="") as log_file:
            csv.DictWriter(log_file, EPOCH_FIELDS).writerow(row)
        plot_log(self.out_dir, self.grad_clip)
        if self.tensorboard is not None:
            for name in TENSORBOARD_EPOCH_FIELDS:
                self.tensorboard.add_scalar(f"epoch/{name}", row[name], row["epoch"])
            self.tensorboard.flush()

    def close(self) -> None:
        if self.step_file is not None:
            self.step_file.close()
            self.step_file = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def keep_csv_rows(path: Path, keep) -> None:
    """Rewrite a CSV log with only the rows ``keep`` accepts."""
    with open(path, newline="") as csv_file:
        reader = csv.DictReader(csv_file)
        rows = [row for row in reader if keep(row)]
        fields = reader.fieldnames or []
    with open(path, "w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fields)
        writer.writeheader()
        writer.writerows(rows)


def open_tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("training.tensorboard needs the tensorboard package: pip install 'asr[tensorboard]'") from None
    return SummaryWriter(out_dir / "tensorboard")


def plot_log(out_dir: Path, grad_clip: float) -> None:
    """``training.png``: loss and dev error rates per epoch, and the gradient norm of every step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / "log.csv", newline="") as log_file:
        rows = list(csv.DictReader(log_file))
    with open(out_dir / "steps.csv", newline="") as step_file:
        steps = list(csv.DictReader(step_file))
    epochs = [int(r["epoch"]) for r in rows]
    figure, (loss_axis, wer_axis, grad_axis) = plt.subplots(1, 3, figsize=(15, 4))
    loss_axis.plot(epochs, [float(r["train_loss"]) for r in rows], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="CTC loss per utterance", title="training loss", yscale="log")
    wer_axis.plot(epochs, [100 * float(r["dev_wer"]) for r in rows], marker="o", label="WER")
    wer_axis.plot(epochs, [100 * float(r["dev_cer"]) for r in rows], marker="o", label="CER")
    wer_axis.set(xlabel="epoch", ylabel="%", title="dev error rates")
    wer_axis.legend()
    grad_axis.plot([int(r["step"]) for r in steps], [float(r["grad_norm"]) for r in steps], linewidth=0.6)
    grad_axis.axhline(grad_clip, color="red", linestyle="--", linewidth=1, label=f"clipped above {grad_clip:g}")
    grad_axis.set(xlabel="step", ylabel="global gradient norm (before clipping)", title="gradients", yscale="log")
    grad_axis.legend()
    figure.tight_layout()
    figure.savefig(out_dir / "training.png", dpi=100)
    plt.close(figure)


def keep_best_epochs(out_dir: Path, state: dict[str, Any], epoch: int, count: int) -> None:
    """Save this epoch's weights as OUT/epochs/epochNNN.pt and delete all but the ``count`` epochs with the
    lowest dev WER in log.csv (the later on a tie, so without a dev set the last ``count``)."""
    folder = out_dir / "epochs"
    save_checkpoint(folder / f"epoch{epoch:03d}.pt", state)
    with open(out_dir / "log.csv", newline="") as log_file:
        wers = {int(row["epoch"]): float(row["dev_wer"]) for row in csv.DictReader(log_file)}
    saved = epoch_files(folder)
    # Files of epochs after this one are left from a run killed and resumed before them.
    ranked = sorted((e for e in saved if e <= epoch),
                    key=lambda e: (math.inf if math.isnan(wers.get(e, math.nan)) else wers[e], -e))
    for stale in set(saved) - set(ranked[:count]):
        saved[stale].unlink()


def epoch_files(folder: Path) -> dict[int, Path]:
    """The epoch checkpoints ``keep_best_epochs`` left in ``folder``, by epoch number."""
    return {int(path.stem.removeprefix("epoch")): path for path in folder.glob("epoch*.pt")}


def average_kept_epochs(out_dir: Path, model: torch.nn.Module) -> list[int]:
    """Load into ``model`` the mean of the weights ``keep_best_epochs`` kept; returns their epoch numbers."""
    kept = dict(sorted(epoch_files(out_dir / "epochs").items()))
    model.load_state_dict(average_weights(list(kept.values())))
    return list(kept)
