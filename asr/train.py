"""Training: CTC on duration-bucketed batches, with every step visible in one loop."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import statistics
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.augment import Augmentation
from asr.checkpoint import Recognizer, choose_device, load_checkpoint, model_state, save_checkpoint
from asr.config import Config
from asr.data import DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.errors import AsrError
from asr.evaluate import dataset_log_probs, error_rates
from asr.features import FeatureConfig, LogMelFrontend
from asr.model import AcousticModel
from asr.text import Vocabulary, normalize_text

log = logging.getLogger("asr.train")

LOG_FIELDS = ["epoch", "step", "train_loss", "dev_wer", "dev_cer", "learning_rate", "epoch_seconds",
              "audio_seconds_per_second", "dropped_utterances", "grad_norm_median", "grad_norm_max", "clip_fraction",
              "skipped_steps"]
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
    fastest = config.augment.fastest  # the fastest speed leaves the fewest frames for the labels
    keep = [i for i, (u, t) in enumerate(zip(dataset.utterances, dataset.targets))
            if u.duration / config.augment.slowest <= config.data.max_duration
            and ctc_fits(t, output_frames(u.duration / fastest, config.features, model))]
    if not keep:
        raise AsrError("no training utterance is short enough and has few enough labels for its frames")
    return dataset.subset(keep), len(utterances) - len(keep)


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, final_ratio: float) -> float:
    """Linear warmup, then cosine decay to ``final_ratio`` of the peak."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train(config: Config, out_dir: str | Path, resume: bool = False, device: str | None = None) -> Path:
    """Train per ``config``, writing checkpoints, a CSV log and a plot to ``out_dir``; returns the best checkpoint."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = choose_device(device)
    settings = config.training
    torch.manual_seed(settings.seed)
    vocabulary = Vocabulary()

    frontend = LogMelFrontend(config.features).to(device)
    model = AcousticModel(config.model, config.features.n_mels, len(vocabulary)).to(device)
    train_set, dropped = training_set(config, vocabulary, model)
    dev_utterances = [u for manifest in config.data.dev for u in read_manifest(manifest)]
    dev_set = SpeechDataset(dev_utterances, vocabulary, source="dev manifests") if dev_utterances else None
    if dropped:
        log.warning("dropped %d training utterances longer than %.0f s or with more labels than frames",
                    dropped, config.data.max_duration)

    # Durations at the slowest speed, so that augmented batches stay within batch_seconds too.
    sampler = DurationBatchSampler([u.duration / config.augment.slowest for u in train_set.utterances],
                                   config.data.batch_seconds,
                                   seed=settings.seed, sortagrad=config.data.sortagrad)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers,
                        pin_memory=device.type == "cuda")
    total_steps = settings.epochs * len(sampler)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, settings.warmup_steps, total_steps, settings.final_lr_ratio))
    autocast_dtype, use_scaler = autocast_settings(settings.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ctc_loss = torch.nn.CTCLoss(blank=vocabulary.blank, reduction="sum", zero_infinity=True)

    start_epoch, step, best_wer = 1, 0, math.inf
    if resume and (out_dir / "last.pt").is_file():
        state = load_checkpoint(out_dir / "last.pt")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, best_wer = state["epoch"] + 1, state["step"], state["best_wer"]
        log.info("resuming after epoch %d from %s", state["epoch"], out_dir / "last.pt")
    else:
        (out_dir / "log.csv").write_text(",".join(LOG_FIELDS) + "\n")
        (out_dir / "steps.csv").write_text(",".join(STEP_FIELDS) + "\n")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    log.info("%d training utterances (%.1f h), %d dev, %d batches per epoch, %.1fM parameters, %s%s",
             len(train_set), math.fsum(u.duration for u in train_set.utterances) / 3600, len(dev_utterances), len(sampler),
             sum(p.numel() for p in model.parameters()) / 1e6, device,
             f", {autocast_dtype} autocast" if autocast_dtype else "")

    training_seconds = 0.0  # this process's, for max_minutes
    out_of_time = False
    for epoch in range(start_epoch, settings.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.epoch = epoch  # the augmentation's draws; the loader's workers copy it when the epoch starts
        model.train()
        frontend.train()
        started, audio_seconds, loss_sum, utterances_seen = time.perf_counter(), 0.0, 0.0, 0
        grad_norms, skipped, bad_in_a_row = [], 0, 0
        step_log = open(out_dir / "steps.csv", "a", newline="")
        bar = tqdm(loader, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False)
        for batch in bar:
            batch = batch.to(device)
            features, feature_lengths = frontend(batch.waveforms, batch.lengths)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                log_probs, frame_lengths = model(features, feature_lengths)
            batch_size = len(batch.lengths)
            loss = ctc_loss(log_probs.transpose(0, 1), batch.targets, frame_lengths, batch.target_lengths) / batch_size

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            # The global norm before clipping: where vanishing or exploding gradients show.
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip).item()
            finite = math.isfinite(grad_norm) and math.isfinite(loss.item())
            if finite or use_scaler:  # fp16's scaler skips non-finite steps itself and lowers its scale
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
            if not finite:
                skipped += 1
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW and not use_scaler:
                    raise AsrError(f"training diverged: {bad_in_a_row} steps in a row had a non-finite loss or "
                                   f"gradients (try a lower training.learning_rate)")
                continue
            bad_in_a_row = 0
            grad_norms.append(grad_norm)
            csv.writer(step_log).writerow([epoch, step, f"{loss.item():.4f}", f"{grad_norm:.4f}",
                                           int(grad_norm > settings.grad_clip), f"{scheduler.get_last_lr()[0]:.3g}"])

            loss_sum += loss.item() * batch_size
            utterances_seen += batch_size
            audio_seconds += batch.lengths.sum().item() / config.features.sample_rate
            bar.set_postfix(loss=f"{loss.item():.3f}", audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")
            if settings.max_minutes and training_seconds + time.perf_counter() - started > 60 * settings.max_minutes:
                out_of_time = True
                break
        bar.close()
        step_log.close()
        epoch_seconds = time.perf_counter() - started
        training_seconds += epoch_seconds

        dev_wer = dev_cer = math.nan
        if dev_set is not None:
            recognizer = Recognizer(frontend.eval(), model.eval(), vocabulary, device)
            hypotheses = [h.text for h in recognizer.decoder("greedy").decode(dataset_log_probs(recognizer, dev_set))]
            rates = error_rates([normalize_text(u.text) for u in dev_set.utterances], hypotheses)
            dev_wer, dev_cer = rates.wer, rates.cer

        row = {"epoch": epoch, "step": step, "train_loss": loss_sum / utterances_seen if utterances_seen else math.nan, "dev_wer": dev_wer,
               "dev_cer": dev_cer, "learning_rate": scheduler.get_last_lr()[0], "epoch_seconds": epoch_seconds,
               "audio_seconds_per_second": audio_seconds / epoch_seconds, "dropped_utterances": dropped,
               "grad_norm_median": statistics.median(grad_norms) if grad_norms else math.nan,
               "grad_norm_max": max(grad_norms, default=math.nan),
               "clip_fraction": sum(n > settings.grad_clip for n in grad_norms) / max(1, len(grad_norms)),
               "skipped_steps": skipped}
        with open(out_dir / "log.csv", "a", newline="") as log_file:
            csv.DictWriter(log_file, LOG_FIELDS).writerow(row)
        plot_log(out_dir, settings.grad_clip)
        log.info("epoch %d: train loss %.3f, dev WER %.2f%%, CER %.2f%%, %.0f s (%.1f s of audio per second), "
                 "gradient norm median %.2f, clipped %.0f%% of steps%s", epoch, row["train_loss"], 100 * dev_wer,
                 100 * dev_cer, epoch_seconds, row["audio_seconds_per_second"], row["grad_norm_median"],
                 100 * row["clip_fraction"], f", {skipped} non-finite steps skipped" if skipped else "")

        improved = not dev_wer >= best_wer  # also true when there is no dev set (NaN)
        best_wer = dev_wer if improved else best_wer
        state = model_state(model, config.features, vocabulary)
        if improved:
            save_checkpoint(out_dir / "best.pt", state)
        save_checkpoint(out_dir / "last.pt", {
            **state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "best_wer": best_wer,
        })
        if out_of_time:
            log.info("stopping: training.max_minutes (%g) reached during epoch %d", settings.max_minutes, epoch)
            break
    return out_dir / "best.pt"


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
