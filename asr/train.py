"""Training: CTC on duration-bucketed batches.

``train_step`` is one optimiser step, ``train_epoch`` the loop over an epoch's batches, and ``train`` sets a
run up (or resumes it from OUT/last.pt) and runs its epochs. Around them, ``asr.harness`` holds the run's place
in a torchrun job, its random generators and stop signals, and ``asr.records`` its logs, plot and kept epochs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.checkpoint import load_checkpoint, model_state, save_checkpoint
from asr.config import Config, TrainingConfig
from asr.data import Batch, DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.errors import AsrError, ConfigError
from asr.evaluate import dataset_log_probs, error_rates
from asr.feature_config import FeatureConfig
from asr.features import LogMelFrontend
from asr.harness import (Distributed, StopRequest, TrainingInterrupted, check_identical_weights, ignore_stop_signals,
                         is_out_of_memory, random_states, seed_rank, set_random_states, start_distributed,
                         stop_requests)
from asr.model import AcousticModel
from asr.recognizer import Recognizer
from asr.records import DevResult, EpochStats, RunRecords, average_kept_epochs, epoch_row, keep_best_epochs
from asr.text import Vocabulary, normalize_text
from asr.train_data import training_batches, training_prior, training_set, with_checkpoint_features

log = logging.getLogger("asr.train")

MAX_BAD_STEPS_IN_A_ROW = 20


# On a CPU with native bf16, bf16 autocast trains faster than fp32 only on large batches: oneDNN's bf16 LSTM
# backward pass costs about the same per time step whatever the batch (AN4, 2-core Xeon with AMX: 0.86x fp32
# at 20-second batches, 1.23x at 40, 1.34x at 60; benchmarks/bf16_profile.py shows where, docs/experiments.md
# the figures).
BF16_MIN_BATCH_SECONDS = 40.0


def autocast_settings(precision: str, device: torch.device,
                      batch_seconds: float) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None for fp32) and whether fp16's gradient scaler is needed.

    ``auto`` is fp16 with the scaler on CUDA, whatever the GPU: cuDNN's autocast wrapper runs recurrent layers
    in fp16 under any CUDA autocast (ATen's cudnn/AutocastRNN.cpp casts to kHalf), so bf16 would leave the
    LSTMs, most of the work, unscaled fp16 or (as asr.model does it) fp32. On a CPU, bf16 where it has bf16
    instructions and batches hold at least BF16_MIN_BATCH_SECONDS of audio, else fp32.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        elif batch_seconds >= BF16_MIN_BATCH_SECONDS and cpu_has_native_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return dtype, dtype is torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 instructions here (AVX-512 BF16 or AMX); without them bf16 is emulated
    and many times slower than fp32 (about 15x for a training step on an AVX2-only EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
class TrainState:
    """Everything OUT/last.pt holds, so that a run resumed from it goes on exactly where it was written (the
    file adds every rank's random generators, gathered when it is written)."""

    model: AcousticModel
    features: FeatureConfig
    vocabulary: Vocabulary
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 1
    step: int = 0
    epoch_finished: bool = False
    stats: EpochStats = field(default_factory=EpochStats)
    best_wer: float = math.inf
    seconds_trained: float = 0.0  # the slowest rank's training time so far, dev evaluation not counted

    def checkpoint(self, random_states: list[dict[str, Any]]) -> dict[str, Any]:
        return {**model_state(self.model, self.features, self.vocabulary), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "epoch_finished": self.epoch_finished, "epoch_stats": dataclasses.asdict(self.stats),
                "best_wer": self.best_wer, "seconds_trained": self.seconds_trained, "random_states": random_states}

    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model_state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(saved["scaler"])
        else:  # trained without fp16's scaler (fp32 or bf16) and resumed with it: it starts at its initial scale
            log.info("the gradient scaler starts afresh: the run was written without one")
        self.step, self.best_wer = saved["step"], saved["best_wer"]
        self.seconds_trained = saved.get("seconds_trained", 0.0)
        self.epoch_finished = saved.get("epoch_finished", True)  # early checkpoints were all at epoch ends
        if self.epoch_finished:
            self.epoch = saved["epoch"] + 1
        else:
            self.epoch, self.stats = saved["epoch"], EpochStats(**saved["epoch_stats"])


def new_state(config: Config, vocabulary: Vocabulary, device: torch.device) -> TrainState:
    """Fresh weights (from training.seed, the same on every rank), AdamW, and the gradient scaler if fp16 needs it."""
    settings = config.training
    torch.manual_seed(settings.seed)
    model = AcousticModel(config.model, config.features.n_mels, len(vocabulary)).to(device)
    freeze(model, settings.freeze)
    # The fused kernel updates every tensor in one pass: 5 times faster than the default loop on a CPU.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay, fused=device.type in ("cpu", "cuda"))
    _, use_scaler = autocast_settings(settings.precision, device, config.data.batch_seconds)
    return TrainState(model, config.features, vocabulary, optimizer, torch.amp.GradScaler(device.type, enabled=use_scaler))


def is_frozen(name: str, prefixes: list[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def freeze(model: AcousticModel, prefixes: list[str]) -> None:
    """training.freeze: the parameters it names take no gradient (train_epoch keeps their batch norms' statistics)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(is_frozen(name, [prefix]) for name in names):
            raise ConfigError(f"training.freeze: {prefix!r} names no parameter of the model (its layers: conv, "
                              f"rnns.0 to rnns.{len(model.rnns) - 1}, output)")
    if all(is_frozen(name, prefixes) for name in names):
        raise ConfigError("training.freeze: every parameter is frozen, so nothing would train")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not is_frozen(name, prefixes))


@dataclass
class Trainer:
    """What a training step runs with, the same from step to step."""

    settings: TrainingConfig
    frontend: LogMelFrontend
    network: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    device: torch.device
    autocast_dtype: torch.dtype | None
    total_steps: int  # for the learning-rate schedule
    ctc_loss: torch.nn.CTCLoss

    def learning_rate(self, state: TrainState) -> float:
        settings = self.settings
        time_used = state.seconds_trained / (60 * settings.max_minutes) if settings.max_minutes else 0.0
        return settings.learning_rate * learning_rate_factor(state.step, settings.warmup_steps, self.total_steps,
                                                             settings.final_lr_ratio, time_used)


def new_trainer(config: Config, state: TrainState, device: torch.device, total_steps: int,
                ddp: Distributed = Distributed()) -> Trainer:
    autocast_dtype, _ = autocast_settings(config.training.precision, device, config.data.batch_seconds)
    if autocast_dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16() and ddp.is_main:
        log.warning("training.precision bf16: this CPU has no native bf16 instructions (AVX-512 BF16 or AMX), "
                    "so bf16 autocast runs many times slower than fp32 here; use precision fp32")
    network = (DistributedDataParallel(state.model, device_ids=[device] if device.type == "cuda" else None)
               if ddp.world_size > 1 else state.model)
    return Trainer(config.training, LogMelFrontend(state.features).to(device), network, device, autocast_dtype,
                   total_steps, torch.nn.CTCLoss(blank=state.vocabulary.blank, reduction="sum", zero_infinity=True))


@dataclass
class StepResult:
    loss_sum: float  # CTC loss summed over the step's utterances
    utterances: int
    audio_seconds: float
    grad_norm: float  # the global norm before clipping
    learning_rate: float
    finite: bool  # loss and gradients; a step that is not is skipped


def train_step(trainer: Trainer, state: TrainState, batches: list[Batch]) -> StepResult:
    """One optimiser step: forward, CTC and backward on each of ``batches`` (training.accumulate_batches; their
    gradients add up, and DDP averages them over ranks on the last), then unscale, clip and step, unless the loss
    or the gradients are not finite (fp16's scaler skips those steps itself and lowers its scale)."""
    settings = trainer.settings
    loss_sum = torch.zeros((), device=trainer.device)
    for number, batch in enumerate(batches, start=1):
        batch = batch.to(trainer.device)
        syncs = number == len(batches) or not isinstance(trainer.network, DistributedDataParallel)
        with contextlib.nullcontext() if syncs else trainer.network.no_sync():
            features, feature_lengths = trainer.frontend(batch.waveforms, batch.lengths)
            with torch.autocast(trainer.device.type, dtype=trainer.autocast_dtype or torch.float32,
                                enabled=trainer.autocast_dtype is not None):
                log_probs, frame_lengths = trainer.network(features, feature_lengths)
            loss = trainer.ctc_loss(log_probs.float().transpose(0, 1), batch.targets, frame_lengths,
                                    batch.target_lengths) / len(batch.lengths)
            state.scaler.scale(loss / settings.accumulate_batches).backward()
        loss_sum += loss.detach() * len(batch.lengths)
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), settings.grad_clip)
    loss_value, grad_value = torch.stack([loss_sum, grad_norm]).tolist()  # the step's one wait for the device
    finite = math.isfinite(loss_value) and math.isfinite(grad_value)
    learning_rate = trainer.learning_rate(state)
    if finite or state.scaler.is_enabled():
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
    state.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, sum(len(b.lengths) for b in batches), audio_seconds(batches, state.features),
                      grad_value, learning_rate, finite)


def audio_seconds(batches: list[Batch], features: FeatureConfig) -> float:
    return sum(b.lengths.sum().item() for b in batches) / features.sample_rate


@dataclass
class Run:
    """A training run: its step, data, records and place in a torchrun job."""

    config: Config
    out_dir: Path
    ddp: Distributed
    trainer: Trainer
    train_set: SpeechDataset
    sampler: DurationBatchSampler
    loader: DataLoader
    dev_set: SpeechDataset | None
    dropped: int  # training utterances too long, or with more labels than frames
    records: RunRecords


def train(config: Config, out_dir: str | Path, resume: bool = False, device: str | None = None) -> Path:
    """Train per ``config``, writing checkpoints, a CSV log and a plot to ``out_dir``; returns the best checkpoint.

    Under torchrun each process trains on its share of every epoch's batches; rank 0
    writes the checkpoints, logs and plots.
    """
    ddp, torch_device = start_distributed(device)
    try:
        with stop_requests() as stop:
            run, state = start_run(config, Path(out_dir), resume, torch_device, ddp)
            try:
                while state.epoch <= run.config.training.epochs:
                    out_of_time = train_epoch(run, state, stop)
                    finish_epoch(run, state)
                    if out_of_time:
                        if ddp.is_main:
                            log.info("stopping: training.max_minutes (%g) reached during epoch %d",
                                     run.config.training.max_minutes, state.epoch)
                        break
                    state.epoch += 1
            finally:
                run.records.close()
            return best_checkpoint(run, state)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train_epoch(run: Run, state: TrainState, stop: StopRequest) -> bool:
    """The rest of ``state.epoch``'s steps; returns whether training.max_minutes ran out during it."""
    settings, stats, ddp = run.config.training, state.stats, run.ddp
    run.sampler.set_epoch(state.epoch, start=stats.batches)
    ddp.check_same(f"epoch {state.epoch}'s batches", run.sampler.digest())
    run.train_set.epoch = state.epoch  # the augmentation's draws; the loader's workers copy it when the epoch starts
    state.epoch_finished = False
    run.trainer.network.train()
    run.trainer.frontend.train()
    for name, module in state.model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and is_frozen(name, settings.freeze):
            module.eval()
    bad_in_a_row = 0
    bar = tqdm(run.loader, desc=f"epoch {state.epoch}/{settings.epochs}", unit="batch", leave=False,
               total=len(run.sampler), initial=stats.batches, disable=not ddp.is_main)
    clock = time.perf_counter()
    for batches in groups_of(bar, settings.accumulate_batches):
        stats.batches += len(batches)
        try:
            result = train_step(run.trainer, state, batches)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error) or ddp.world_size > 1:  # other ranks would wait for this one's gradients
                raise
            result = None
        if result is None:  # out of the except block, the failed step's tensors are freed with its traceback
            skip_out_of_memory(run, state, batches)
        elif result.finite:
            bad_in_a_row = 0
        else:
            stats.non_finite += 1
            bad_in_a_row += 1
            if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW and not state.scaler.is_enabled():
                raise AsrError(f"training diverged: {bad_in_a_row} steps in a row had a non-finite loss or "
                               f"gradients (try a lower training.learning_rate)")
        now = time.perf_counter()
        stop_now, loss = agree_on_step(run, state, result, stop, now - clock)
        clock = now
        if result is not None and result.finite:
            stats.grad_norms.append(result.grad_norm)
            run.records.step(state.epoch, state.step, loss, result.grad_norm, result.learning_rate)
            bar.set_postfix(loss=f"{loss:.3f}", audio_s_per_s=f"{stats.audio_seconds / stats.seconds:.1f}")
        if stop_now:
            save_last(run, state)
            raise TrainingInterrupted(f"interrupted by {stop.name} at epoch {state.epoch}, step {state.step}: "
                                      f"{run.out_dir / 'last.pt'} holds it; continue with --resume",
                                      stop.signal_number or 15)
        if settings.max_minutes and state.seconds_trained > 60 * settings.max_minutes:
            bar.close()
            return True
        if settings.checkpoint_every and result is not None and state.step % settings.checkpoint_every == 0:
            save_last(run, state)
    bar.close()
    return False


def groups_of(items: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    iterator = iter(items)
    while group := list(itertools.islice(iterator, size)):
        yield group


def skip_out_of_memory(run: Run, state: TrainState, batches: list[Batch]) -> None:
    state.stats.out_of_memory += len(batches)
    log.warning("skipped a step that ran out of memory (%d utterances, %.0f s of audio); lower data.batch_seconds "
                "if this recurs", sum(len(b.lengths) for b in batches), audio_seconds(batches, state.features))
    state.optimizer.zero_grad(set_to_none=True)
    if run.trainer.device.type == "cuda":
        torch.cuda.empty_cache()


def agree_on_step(run: Run, state: TrainState, result: StepResult | None, stop: StopRequest,
                  seconds: float) -> tuple[bool, float]:
    """After each step (of ``seconds`` on this rank's clock), every rank's stop request, clock and counts through
    one collective: all ranks stop together, share one time budget (the slowest rank's clock, which the learning
    rate follows too) and log the loss and throughput of all. Returns whether to stop, and the step's loss per
    utterance over all ranks."""
    loss_sum, utterances, audio = (result.loss_sum, result.utterances, result.audio_seconds) if result else (0, 0, 0)
    ranks = run.ddp.gather_numbers([float(stop.signal_number is not None), state.seconds_trained + seconds,
                                    loss_sum, utterances, audio], run.trainer.device)
    stop_flags, clocks, *counts = zip(*ranks)
    stop_now, seconds_trained, (loss_sum, utterances, audio) = any(stop_flags), max(clocks), map(sum, counts)
    stats = state.stats
    stats.seconds += seconds_trained - state.seconds_trained
    state.seconds_trained = seconds_trained
    stats.loss_sum += loss_sum
    stats.utterances += round(utterances)
    stats.audio_seconds += audio
    return stop_now, loss_sum / max(1, utterances)


def finish_epoch(run: Run, state: TrainState) -> None:
    """The epoch's row in the logs, its dev scores, best.pt when they improved, and last.pt."""
    ddp, settings = run.ddp, run.config.training
    if ddp.world_size > 1:
        digest = check_identical_weights(state.model, ddp, state.epoch)
        if ddp.is_main:
            log.info("epoch %d: weights identical on all %d processes (digest %s)", state.epoch, ddp.world_size,
                     digest)
    dev = evaluate_dev(run.trainer, state, run.dev_set, ddp) if run.dev_set is not None else DevResult()
    improved = not dev.wer >= state.best_wer  # also true when there is no dev set (NaN)
    state.best_wer = dev.wer if improved else state.best_wer
    if ddp.is_main:
        run.records.epoch(epoch_row(state.epoch, state.step, state.stats, dev, run.trainer.learning_rate(state),
                                    run.dropped, settings.grad_clip))
        weights = model_state(state.model, state.features, state.vocabulary)
        if improved:
            save_checkpoint(run.out_dir / "best.pt", weights)
        if settings.average_best:
            keep_best_epochs(run.out_dir, weights, state.epoch, settings.average_best)
    state.stats = EpochStats()
    state.epoch_finished = True
    save_last(run, state)


def save_last(run: Run, state: TrainState) -> None:
    """OUT/last.pt: everything needed to go on exactly from here (rank 0 writes it, with every rank's generators)."""
    states = run.ddp.all_gather(random_states())
    if run.ddp.is_main:
        run.records.flush()
        save_checkpoint(run.out_dir / "last.pt", state.checkpoint(states))


def best_checkpoint(run: Run, state: TrainState) -> Path:
    """best.pt, or with training.average_best, average.pt (the mean of the kept epochs) when it scores at
    least as well on the dev set."""
    if not (run.config.training.average_best and run.ddp.is_main):
        return run.out_dir / "best.pt"
    epochs = ", ".join(map(str, average_kept_epochs(run.out_dir, state.model)))
    save_checkpoint(run.out_dir / "average.pt", model_state(state.model, state.features, state.vocabulary))
    if run.dev_set is None:
        log.info("average.pt: the mean of epochs %s", epochs)
        return run.out_dir / "average.pt"
    dev = evaluate_dev(run.trainer, state, run.dev_set, Distributed())
    log.info("average.pt, the mean of epochs %s: dev loss %.3f, WER %.2f%%, CER %.2f%% (best single epoch: WER %.2f%%)",
             epochs, dev.loss, 100 * dev.wer, 100 * dev.cer, 100 * state.best_wer)
    return run.out_dir / ("best.pt" if dev.wer > state.best_wer else "average.pt")


def start_run(config: Config, out_dir: Path, resume: bool, device: torch.device, ddp: Distributed
              ) -> tuple[Run, TrainState]:
    """A new run, or with ``resume`` the one OUT/last.pt holds (read by rank 0 and sent to the others, so that
    machines need not share the folder)."""
    settings = config.training
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    saved = ddp.from_main(load_checkpoint(last) if ddp.is_main and resume and last.is_file() else None)
    vocabulary = Vocabulary()
    init = (ddp.from_main(load_checkpoint(settings.init) if ddp.is_main else None)
            if settings.init and saved is None else None)
    if settings.init:  # a resumed run's last.pt holds the same features as the checkpoint it started from
        config = with_checkpoint_features(config, init if saved is None else saved, vocabulary)
    state = new_state(config, vocabulary, device)
    if init is not None:
        state.model.load_state_dict({name: tensor.float() for name, tensor in init["model_state"].items()})
    train_set, dropped = training_set(config, vocabulary, state.model)
    if config.features.prior_frames > 0 and not config.features.prior_mean:
        # A resumed run keeps the statistics it trained with instead of measuring them again.
        kept = saved["feature_config"] if saved is not None else {}
        mean, std = ((kept["prior_mean"], kept["prior_std"]) if kept.get("prior_mean")
                     else training_prior(config, train_set, device))
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, prior_mean=mean,
                                                                          prior_std=std))
        state.features = config.features
    dev_utterances = [u for manifest in config.data.dev for u in read_manifest(manifest)]
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
    run = Run(config, out_dir, ddp, new_trainer(config, state, device, total_steps, ddp), train_set, sampler, loader,
              SpeechDataset(dev_utterances, vocabulary, source="dev manifests") if dev_utterances else None,
              dropped, RunRecords(out_dir, settings.grad_clip, settings.tensorboard, active=ddp.is_main))
    if saved is None:
        seed_rank(settings.seed, ddp)
    else:
        resume_state(run, state, saved)
    run.records.start(state.step if saved is not None else None, state.epoch)
    if ddp.is_main:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        log.info("%d training utterances (%.1f h), %d dev, %d batches per epoch%s, %.1fM parameters, %s%s",
                 len(train_set), math.fsum(u.duration for u in train_set.utterances) / 3600, len(dev_utterances),
                 first_epoch_batches, f" on each of {ddp.world_size} processes" if ddp.world_size > 1 else "",
                 sum(p.numel() for p in state.model.parameters()) / 1e6, device,
                 f", {run.trainer.autocast_dtype} autocast" if run.trainer.autocast_dtype else "")
    return run, state


def resume_state(run: Run, state: TrainState, saved: dict[str, Any]) -> None:
    """Go on from a checkpoint: exactly, with each rank's generators, when the process count is the one it was
    written with; otherwise from the same point of the epoch, each rank with a new random stream of its own."""
    state.restore(saved)
    ddp, written_by = run.ddp, len(saved.get("random_states", []))
    if written_by == ddp.world_size:
        set_random_states(saved["random_states"][ddp.rank])
    else:
        seed_rank(run.config.training.seed, ddp, state.step)
        # The sampler deals the epoch's batches out in turn, so this many batches per rank is the same point of it.
        state.stats.batches = state.stats.batches * max(1, written_by) // ddp.world_size
        if ddp.is_main:
            log.warning("%s was written by %d processes, not %d: each process draws new random numbers, and the "
                        "epoch goes on from batch %d", run.out_dir / "last.pt", written_by, ddp.world_size,
                        state.stats.batches + 1)
    if ddp.is_main:
        log.info("resuming at epoch %d, step %d, from %s", state.epoch, state.step, run.out_dir / "last.pt")


@torch.no_grad()
def evaluate_dev(trainer: Trainer, state: TrainState, dev_set: SpeechDataset, ddp: Distributed) -> DevResult:
    """Dev loss and greedy WER/CER; each rank takes a share of the utterances, and the results are pooled."""
    mine = dev_set.subset(range(ddp.rank, len(dev_set), ddp.world_size))
    recognizer = Recognizer(trainer.frontend.eval(), state.model.eval(), state.vocabulary, trainer.device)
    log_probs = dataset_log_probs(recognizer, mine)
    ctc_loss = trainer.ctc_loss
    loss_sum = sum(ctc_loss(torch.from_numpy(array)[:, None], target[None], [len(array)], [len(target)]).item()
                   for array, target in zip(log_probs, mine.targets))
    hypotheses = [h.text for h in recognizer.decoder("greedy").decode(log_probs, timings=False)]
    pairs = [(normalize_text(u.text), hypothesis) for u, hypothesis in zip(mine.utterances, hypotheses)]
    gathered = ddp.all_gather((loss_sum, pairs))
    pooled = [pair for _, rank_pairs in gathered for pair in rank_pairs]
    total_loss = sum(rank_loss for rank_loss, _ in gathered)
    rates = error_rates([reference for reference, _ in pooled], [hypothesis for _, hypothesis in pooled])
    return DevResult(total_loss / len(pooled), rates.wer, rates.cer)
