"""Training: CTC on duration-bucketed batches, with every step visible in one loop."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import logging
import math
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.augment import Augmentation, trimmed_durations
from asr.checkpoint import average_weights, load_checkpoint, model_state, save_checkpoint
from asr.config import Config, ConfigError
from asr.data import DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.errors import AsrError
from asr.evaluate import dataset_log_probs, error_rates
from asr.features import FeatureConfig, LogMelFrontend, prior_statistics
from asr.model import AcousticModel
from asr.recognizer import Recognizer, choose_device
from asr.text import Vocabulary, normalize_text

log = logging.getLogger("asr.train")

LOG_FIELDS = ["epoch", "step", "train_loss", "dev_loss", "dev_wer", "dev_cer", "learning_rate", "epoch_seconds",
              "audio_seconds_per_second", "dropped_utterances", "grad_norm_median", "grad_norm_max", "clip_fraction",
              "skipped_steps", "out_of_memory_batches"]
STEP_FIELDS = ["epoch", "step", "loss", "grad_norm", "clipped", "learning_rate"]
MAX_BAD_STEPS_IN_A_ROW = 20


def autocast_settings(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None for fp32) and whether fp16's gradient scaler is needed."""
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return dtype, dtype is torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 instructions here (AVX-512 BF16 or AMX); without them bf16 is emulated
    and many times slower than fp32 (about 15x for a training step on an AVX2-only EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def ctc_fits(target: torch.Tensor, frames: int) -> bool:
    """CTC needs a frame per label plus one between each pair of repeated labels."""
    repeats = int((target[1:] == target[:-1]).sum()) if len(target) > 1 else 0
    return len(target) + repeats <= frames


def output_frames(duration: float, features: FeatureConfig, model: AcousticModel) -> int:
    samples = round(duration * features.sample_rate)
    return int(model.output_lengths(torch.tensor(features.num_frames(samples))))


def training_set(config: Config, vocabulary: Vocabulary, model: AcousticModel) -> tuple[SpeechDataset, int]:
    """All training manifests, less utterances too long or with too many labels for their frames at any speed."""
    utterances = [u for manifest in config.data.train for u in read_manifest(manifest)]
    augmentation = Augmentation(config.augment, config.training.seed)
    dataset = SpeechDataset(utterances, vocabulary, source=", ".join(config.data.train),
                            augmentation=augmentation if augmentation.active else None)
    fastest = config.augment.fastest  # the fastest rate (speed times tempo) leaves the fewest frames for the labels
    keep = [i for i, (u, t) in enumerate(zip(dataset.utterances, dataset.targets))
            if config.augment.longest(u.duration) <= config.data.max_duration
            and ctc_fits(t, output_frames(u.duration / fastest, config.features, model))]
    if not keep:
        raise AsrError("no training utterance is short enough and has few enough labels for its frames")
    return dataset.subset(keep), len(utterances) - len(keep)


def training_batches(config: Config, train_set: SpeechDataset, rank: int = 0, world_size: int = 1,
                     progress: bool = False) -> DurationBatchSampler:
    """The training set's duration-bucketed batches for this rank.

    Each epoch's are sized by the durations its augmentation draws (speeds, tempos, padding, trimming), so that
    a batch's utterances come out about as long as each other. Sized by the slowest speed, the most padding and no
    trimming instead, 13% of the bundled config's batches was padding, which the model computes over too (0.8%
    so; benchmarks/batch_padding.py). With trimming, the training audio is read once first, to measure each
    utterance's trimmed duration.
    """
    durations = [u.duration for u in train_set.utterances]
    augmentation = train_set.augmentation
    if augmentation is None:
        epoch_durations = durations
    else:
        trimmed = (trimmed_durations([u.audio_filepath for u in train_set.utterances], config.augment.trim_top_db,
                                     progress) if config.augment.trim_probability > 0 else None)
        epoch_durations = partial(augmentation.durations, durations, trimmed=trimmed)
    return DurationBatchSampler(epoch_durations,
                                config.data.batch_seconds, seed=config.training.seed, sortagrad=config.data.sortagrad,
                                rank=rank, world_size=world_size)


def training_prior(config: Config, train_set: SpeechDataset, device: torch.device) -> tuple[list[float], list[float]]:
    """Each mel bin's mean and deviation on the training audio, unaugmented (features.prior_mean, prior_std)."""
    plain = copy.copy(train_set)
    plain.augmentation = None
    sampler = DurationBatchSampler([u.duration for u in plain.utterances], config.data.batch_seconds,
                                   seed=config.training.seed)
    loader = DataLoader(plain, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers)
    mean, std = prior_statistics(LogMelFrontend(config.features).to(device),
                                 ((batch.waveforms.to(device), batch.lengths.to(device)) for batch in loader))
    log.info("features.prior_frames %g: each mel bin's mean and deviation measured on the training audio",
             config.features.prior_frames)
    return mean, std


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, final_ratio: float,
                         time_used: float = 0.0) -> float:
    """Linear warmup, then cosine decay to ``final_ratio`` of the peak.

    The decay follows the steps done, or the share of a time budget used (``time_used``,
    0 to 1) when that is further along, so that a run stopped by training.max_minutes
    ends decayed as well.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max(time_used, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Distributed:
    """This process's place in a torchrun job; one process, rank 0 of 1, without torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (picklable objects, through the process group)."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any, so that all ranks stop at the same step."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())


def start_distributed(device_name: str | None) -> tuple[Distributed, torch.device]:
    """Join the torchrun job described by the environment, if any: NCCL between GPUs, gloo between CPU processes.

    torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and where to rendezvous); each process
    drives one GPU, ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = choose_device(device_name)
    if world_size == 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(torch.distributed.get_rank(), world_size), device


@dataclass
class EpochStats:
    """What an epoch's log row sums up; kept in step checkpoints so a resumed epoch logs the whole epoch."""

    batches: int = 0  # batches taken from the sampler, including skipped ones
    seconds: float = 0.0
    audio_seconds: float = 0.0
    loss_sum: float = 0.0
    utterances: int = 0
    grad_norms: list[float] = field(default_factory=list)
    non_finite: int = 0
    out_of_memory: int = 0


def random_states() -> dict[str, Any]:
    """Every random generator the training process draws from (dropout, SpecAugment, ...), as plain lists,
    which both ``torch.load(weights_only=True)`` and the process group's object exchange accept."""
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state().tolist(),
            "cuda": [state.tolist() for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(state, dtype=torch.uint8) for state in states["cuda"]])
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT and SIGTERM (sent to the whole process group by Ctrl-C or a job
    scheduler) to the training process, which checkpoints and then shuts them down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TrainingInterrupted(AsrError):
    """SIGINT or SIGTERM arrived; a checkpoint was written first. The exit status is the shell's 128 + signal."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_status = 128 + signal_number


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into a request the loop sees at the next step boundary (a list holding the signal)."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield requested
        return
    previous = {number: signal.signal(number, lambda number, frame: requested.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train(config: Config, out_dir: str | Path, resume: bool = False, device: str | None = None) -> Path:
    """Train per ``config``, writing checkpoints, a CSV log and a plot to ``out_dir``; returns the best checkpoint.

    Under torchrun each process trains on its share of every epoch's batches; rank 0
    writes the checkpoints, logs and plots.
    """
    out_dir = Path(out_dir)
    ddp, device = start_distributed(device)
    try:
        with stop_requests() as requested_stop:
            return _train(config, out_dir, resume, device, ddp, requested_stop)
    finally:
        if ddp.world_size > 1:
            torch.distributed.destroy_process_group()


def _train(config: Config, out_dir: Path, resume: bool, device: torch.device, ddp: Distributed,
           requested_stop: list[int]) -> Path:
    settings = config.training
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)  # the same initial weights on every rank
    vocabulary = Vocabulary()

    resumed = load_checkpoint(out_dir / "last.pt") if resume and (out_dir / "last.pt").is_file() else None
    model = AcousticModel(config.model, config.features.n_mels, len(vocabulary)).to(device)
    train_set, dropped = training_set(config, vocabulary, model)
    if config.features.prior_frames > 0 and not config.features.prior_mean:
        # A resumed run keeps the statistics it trained with instead of measuring them again.
        saved = resumed["feature_config"] if resumed is not None else {}
        mean, std = ((saved["prior_mean"], saved["prior_std"]) if saved.get("prior_mean")
                     else training_prior(config, train_set, device))
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, prior_mean=mean, prior_std=std))
    frontend = LogMelFrontend(config.features).to(device)
    dev_utterances = [u for manifest in config.data.dev for u in read_manifest(manifest)]
    dev_set = SpeechDataset(dev_utterances, vocabulary, source="dev manifests") if dev_utterances else None
    if dropped and ddp.is_main:
        log.warning("dropped %d training utterances longer than %.0f s or with more labels than frames",
                    dropped, config.data.max_duration)

    sampler = training_batches(config, train_set, ddp.rank, ddp.world_size, progress=ddp.is_main)
    # Epochs' batch counts then differ a little; the learning-rate schedule counts the first epoch's for every one.
    first_epoch_batches = len(sampler.batches(1))
    if first_epoch_batches < settings.accumulate_batches:
        raise AsrError(f"{first_epoch_batches} batches per epoch per process: too few for training.accumulate_batches "
                       f"{settings.accumulate_batches} (lower data.batch_seconds or the process count)")
    # The loader's own generator: creating an epoch's iterator must not draw from the global one,
    # or a run resumed inside an epoch would draw different dropout and SpecAugment masks.
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(settings.seed),
                        worker_init_fn=ignore_stop_signals)
    total_steps = settings.epochs * math.ceil(first_epoch_batches / settings.accumulate_batches)
    # The fused kernel updates every tensor in one pass: 5 times faster than the default loop on a CPU.
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    budget_used = [0.0]  # share of training.max_minutes spent, updated every step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, settings.warmup_steps, total_steps, settings.final_lr_ratio, budget_used[0]))
    autocast_dtype, use_scaler = autocast_settings(settings.precision, device)
    if autocast_dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16() and ddp.is_main:
        log.warning("training.precision bf16: this CPU has no native bf16 instructions (AVX-512 BF16 or AMX), "
                    "so bf16 autocast runs many times slower than fp32 here; use precision fp32")
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ctc_loss = torch.nn.CTCLoss(blank=vocabulary.blank, reduction="sum", zero_infinity=True)

    epoch, step, best_wer, stats = 1, 0, math.inf, EpochStats()
    if resumed is not None:
        state = resumed
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, best_wer = state["step"], state["best_wer"]
        if state.get("epoch_finished", True):  # checkpoints before step checkpoints were all at epoch ends
            epoch = state["epoch"] + 1
        else:
            epoch, stats = state["epoch"], EpochStats(**state["epoch_stats"])
        if len(state.get("random_states", [])) == ddp.world_size:
            set_random_states(state["random_states"][ddp.rank])
        elif ddp.is_main:
            log.warning("%s was written by %d processes, not %d: random generators start afresh",
                        out_dir / "last.pt", len(state.get("random_states", [])), ddp.world_size)
        if ddp.is_main:
            log.info("resuming at epoch %d, step %d, from %s", epoch, step, out_dir / "last.pt")
            # Rows written after that checkpoint (the process was killed before the next one) are redone.
            keep_csv_rows(out_dir / "steps.csv", lambda row: int(row["step"]) <= step)
            keep_csv_rows(out_dir / "log.csv", lambda row: int(row["epoch"]) < epoch)
    else:
        torch.manual_seed(settings.seed + ddp.rank)  # each rank its own dropout and SpecAugment draws
        if ddp.is_main:
            (out_dir / "log.csv").write_text(",".join(LOG_FIELDS) + "\n")
            (out_dir / "steps.csv").write_text(",".join(STEP_FIELDS) + "\n")
    if ddp.is_main:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        log.info("%d training utterances (%.1f h), %d dev, %d batches per epoch%s, %.1fM parameters, %s%s",
                 len(train_set), math.fsum(u.duration for u in train_set.utterances) / 3600, len(dev_utterances),
                 first_epoch_batches, f" on each of {ddp.world_size} processes" if ddp.world_size > 1 else "",
                 sum(p.numel() for p in model.parameters()) / 1e6, device,
                 f", {autocast_dtype} autocast" if autocast_dtype else "")
    trained_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ddp.world_size > 1 else model
    tensorboard = open_tensorboard(out_dir) if settings.tensorboard and ddp.is_main else None

    def save_last(epoch_finished: bool) -> None:
        """last.pt: everything needed to go on exactly from here (rank 0 writes it, with every rank's generators)."""
        states = ddp.all_gather(random_states())
        if ddp.is_main:
            save_checkpoint(out_dir / "last.pt", {
                **model_state(model, config.features, vocabulary), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "epoch_finished": epoch_finished, "epoch_stats": dataclasses.asdict(stats),
                "best_wer": best_wer, "random_states": states,
            })

    training_seconds = 0.0  # this process's, for max_minutes
    out_of_time = False
    while epoch <= settings.epochs:
        sampler.set_epoch(epoch, start=stats.batches)
        batches_per_epoch = len(sampler)  # computing it draws every utterance's augmentation and sorts them
        train_set.epoch = epoch  # the augmentation's draws; the loader's workers copy it when the epoch starts
        model.train()
        frontend.train()
        started, seconds_before = time.perf_counter(), stats.seconds
        bad_in_a_row = 0
        step_log = open(out_dir / "steps.csv", "a", newline="") if ddp.is_main else None
        bar = tqdm(loader, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False, total=batches_per_epoch,
                   initial=stats.batches, disable=not ddp.is_main)
        optimizer.zero_grad(set_to_none=True)
        for batch in bar:
            stats.batches += 1
            batch = batch.to(device)
            batch_size = len(batch.lengths)
            # Gradients add up over accumulate_batches batches; DDP averages them over ranks on the last one only.
            steps_now = stats.batches % settings.accumulate_batches == 0 or stats.batches == batches_per_epoch
            try:
                with contextlib.nullcontext() if steps_now or ddp.world_size == 1 else trained_model.no_sync():
                    features, feature_lengths = frontend(batch.waveforms, batch.lengths)
                    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                        enabled=autocast_dtype is not None):
                        log_probs, frame_lengths = trained_model(features, feature_lengths)
                    loss = ctc_loss(log_probs.float().transpose(0, 1), batch.targets, frame_lengths,
                                    batch.target_lengths) / batch_size
                    scaler.scale(loss / settings.accumulate_batches).backward()
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or ddp.world_size > 1:  # other ranks would wait for this one's gradients
                    raise
                stats.out_of_memory += 1
                log.warning("skipped a batch that ran out of memory (%d utterances, %.0f s of audio); "
                            "lower data.batch_seconds if this recurs", batch_size,
                            batch.lengths.sum().item() / config.features.sample_rate)
                optimizer.zero_grad(set_to_none=True)
                del error
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            stats.loss_sum += loss.item() * batch_size
            stats.utterances += batch_size
            stats.audio_seconds += batch.lengths.sum().item() / config.features.sample_rate
            if not steps_now:
                continue

            scaler.unscale_(optimizer)
            # The global norm before clipping: where vanishing or exploding gradients show.
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip).item()
            finite = math.isfinite(grad_norm) and math.isfinite(loss.item())
            stats.seconds = seconds_before + time.perf_counter() - started
            if settings.max_minutes:
                budget_used[0] = (training_seconds + stats.seconds) / (60 * settings.max_minutes)
            if finite or use_scaler:  # fp16's scaler skips non-finite steps itself and lowers its scale
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
            optimizer.zero_grad(set_to_none=True)
            if finite:
                bad_in_a_row = 0
                stats.grad_norms.append(grad_norm)
                if step_log is not None:
                    csv.writer(step_log).writerow([epoch, step, f"{loss.item():.4f}", f"{grad_norm:.4f}",
                                                   int(grad_norm > settings.grad_clip),
                                                   f"{scheduler.get_last_lr()[0]:.3g}"])
                if tensorboard is not None:
                    for name, value in (("loss", loss.item()), ("grad_norm", grad_norm),
                                        ("learning_rate", scheduler.get_last_lr()[0])):
                        tensorboard.add_scalar(f"train/{name}", value, step)
            else:
                stats.non_finite += 1
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW and not use_scaler:
                    raise AsrError(f"training diverged: {bad_in_a_row} steps in a row had a non-finite loss or "
                                   f"gradients (try a lower training.learning_rate)")
            bar.set_postfix(loss=f"{loss.item():.3f}", audio_s_per_s=f"{stats.audio_seconds / stats.seconds:.1f}")

            out_of_time = budget_used[0] > 1
            if ddp.any(bool(requested_stop), device):
                if step_log is not None:
                    step_log.close()
                save_last(epoch_finished=False)
                number = requested_stop[0] if requested_stop else signal.SIGTERM
                raise TrainingInterrupted(
                    f"interrupted by {signal.Signals(number).name} at epoch {epoch}, step {step}: "
                    f"{out_dir / 'last.pt'} holds it; continue with --resume", number)
            if out_of_time:
                break
            if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                step_log is not None and step_log.flush()
                save_last(epoch_finished=False)
        bar.close()
        if step_log is not None:
            step_log.close()
        stats.seconds = seconds_before + time.perf_counter() - started
        training_seconds += stats.seconds

        if ddp.world_size > 1:
            # Batch norm statistics are rank 0's, as DDP hands them out before each forward.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
            digests = ddp.all_gather(parameter_digest(model))
            if len(set(digests)) > 1:
                raise AsrError(f"the {ddp.world_size} processes' weights diverged during epoch {epoch}")
            if ddp.is_main:
                log.info("epoch %d: weights identical on all %d processes (digest %s)", epoch, ddp.world_size, digests[0])

        dev = evaluate_dev(frontend, model, vocabulary, dev_set, ctc_loss, device, ddp) if dev_set is not None else DevResult()
        row = {"epoch": epoch, "step": step, "train_loss": stats.loss_sum / stats.utterances if stats.utterances else math.nan,
               "dev_loss": dev.loss, "dev_wer": dev.wer, "dev_cer": dev.cer, "learning_rate": scheduler.get_last_lr()[0],
               "epoch_seconds": stats.seconds, "audio_seconds_per_second": stats.audio_seconds / max(stats.seconds, 1e-9),
               "dropped_utterances": dropped,
               "grad_norm_median": statistics.median(stats.grad_norms) if stats.grad_norms else math.nan,
               "grad_norm_max": max(stats.grad_norms, default=math.nan),
               "clip_fraction": sum(n > settings.grad_clip for n in stats.grad_norms) / max(1, len(stats.grad_norms)),
               "skipped_steps": stats.non_finite, "out_of_memory_batches": stats.out_of_memory}
        improved = not dev.wer >= best_wer  # also true when there is no dev set (NaN)
        best_wer = dev.wer if improved else best_wer
        if ddp.is_main:
            with open(out_dir / "log.csv", "a", newline="") as log_file:
                csv.DictWriter(log_file, LOG_FIELDS).writerow(row)
            plot_log(out_dir, settings.grad_clip)
            if tensorboard is not None:
                for name in ("train_loss", "dev_loss", "dev_wer", "dev_cer", "audio_seconds_per_second"):
                    tensorboard.add_scalar(f"epoch/{name}", row[name], epoch)
                tensorboard.flush()
            log.info("epoch %d: train loss %.3f, dev loss %.3f, WER %.2f%%, CER %.2f%%, %.0f s (%.1f s of audio per "
                     "second), gradient norm median %.2f, clipped %.0f%% of steps%s%s", epoch, row["train_loss"],
                     dev.loss, 100 * dev.wer, 100 * dev.cer, stats.seconds, row["audio_seconds_per_second"],
                     row["grad_norm_median"], 100 * row["clip_fraction"],
                     f", {stats.non_finite} non-finite steps skipped" if stats.non_finite else "",
                     f", {stats.out_of_memory} batches out of memory" if stats.out_of_memory else "")
            if improved:
                save_checkpoint(out_dir / "best.pt", model_state(model, config.features, vocabulary))
            if settings.average_best:
                keep_best_epochs(out_dir, model_state(model, config.features, vocabulary), epoch, settings.average_best)
        stats = EpochStats()
        save_last(epoch_finished=True)
        if out_of_time:
            if ddp.is_main:
                log.info("stopping: training.max_minutes (%g) reached during epoch %d", settings.max_minutes, epoch)
            break
        epoch += 1
    if tensorboard is not None:
        tensorboard.close()
    if settings.average_best and ddp.is_main:
        return average_best_epochs(out_dir, frontend, model, config, vocabulary, dev_set, ctc_loss, device, best_wer)
    return out_dir / "best.pt"


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


def average_best_epochs(out_dir: Path, frontend: LogMelFrontend, model: AcousticModel, config: Config,
                        vocabulary: Vocabulary, dev_set: SpeechDataset | None, ctc_loss: torch.nn.CTCLoss,
                        device: torch.device, best_wer: float) -> Path:
    """Write average.pt, the mean of the kept epochs' weights, and score it on the dev set; returns it,
    or best.pt if the best single epoch scored lower."""
    kept = dict(sorted(epoch_files(out_dir / "epochs").items()))
    model.load_state_dict(average_weights(list(kept.values())))
    save_checkpoint(out_dir / "average.pt", model_state(model, config.features, vocabulary))
    epochs = ", ".join(map(str, kept))
    if dev_set is None:
        log.info("average.pt: the mean of epochs %s", epochs)
        return out_dir / "average.pt"
    dev = evaluate_dev(frontend, model, vocabulary, dev_set, ctc_loss, device, Distributed())
    log.info("average.pt, the mean of epochs %s: dev loss %.3f, WER %.2f%%, CER %.2f%% (best single epoch: WER %.2f%%)",
             epochs, dev.loss, 100 * dev.wer, 100 * dev.cer, 100 * best_wer)
    return out_dir / ("best.pt" if dev.wer > best_wer else "average.pt")


@dataclass
class DevResult:
    loss: float = math.nan  # CTC loss per utterance
    wer: float = math.nan
    cer: float = math.nan


@torch.no_grad()
def evaluate_dev(frontend: LogMelFrontend, model: AcousticModel, vocabulary: Vocabulary, dev_set: SpeechDataset,
                 ctc_loss: torch.nn.CTCLoss, device: torch.device, ddp: Distributed) -> DevResult:
    """Dev loss and greedy WER/CER; each rank takes a share of the utterances, and the results are pooled."""
    mine = dev_set.subset(range(ddp.rank, len(dev_set), ddp.world_size))
    recognizer = Recognizer(frontend.eval(), model.eval(), vocabulary, device)
    log_probs = dataset_log_probs(recognizer, mine)
    loss_sum = sum(ctc_loss(torch.from_numpy(array)[:, None], target[None], [len(array)], [len(target)]).item()
                   for array, target in zip(log_probs, mine.targets))
    hypotheses = [h.text for h in recognizer.decoder("greedy").decode(log_probs, timings=False)]
    pairs = [(normalize_text(u.text), hypothesis) for u, hypothesis in zip(mine.utterances, hypotheses)]
    gathered = ddp.all_gather((loss_sum, pairs))
    pooled = [pair for _, rank_pairs in gathered for pair in rank_pairs]
    total_loss = sum(rank_loss for rank_loss, _ in gathered)
    rates = error_rates([reference for reference, _ in pooled], [hypothesis for _, hypothesis in pooled])
    return DevResult(total_loss / len(pooled), rates.wer, rates.cer)


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes: equal digests, bit-identical models."""
    digest = hashlib.sha1()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def keep_csv_rows(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
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
