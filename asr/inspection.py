"""A picture of what the model hears: waveform, log-mel features, character posteriors and words."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.decoding import Decoder, split_batch
from asr.recognizer import Recognizer


def inspect_audio(recognizer: Recognizer, audio_path: str | os.PathLike, out: str | os.PathLike,
                  decoder: Decoder | None = None) -> str:
    """Draw one figure for ``audio_path`` into the PNG ``out``; returns the transcript."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoder = decoder or recognizer.decoder()
    sample_rate = recognizer.frontend.config.sample_rate
    samples = load_audio(audio_path, sample_rate)
    waveform, length = torch.from_numpy(samples)[None], torch.tensor([len(samples)])
    with torch.inference_mode():
        features, _ = recognizer.frontend(waveform.to(recognizer.device), length.to(recognizer.device))
    log_probs = split_batch(*recognizer.log_probs(samples[None], np.array([len(samples)])))[0]
    hypothesis = decoder.decode([log_probs])[0]

    duration = len(samples) / sample_rate
    hop = recognizer.frontend.config.hop_length / sample_rate
    frame = recognizer.frame_seconds
    posteriors = np.exp(log_probs)
    tokens = recognizer.vocabulary.tokens
    shown = list(range(1, len(tokens)))  # every token but the blank, which gets its own curve

    figure, axes = plt.subplots(4, 1, figsize=(max(8.0, min(20.0, 4 + 1.2 * duration)), 10), sharex=True,
                                gridspec_kw={"height_ratios": [1, 1.6, 2.4, 0.7]})
    wave_axis, mel_axis, post_axis, word_axis = axes
    wave_axis.plot(np.arange(len(samples)) / sample_rate, samples, linewidth=0.4, color="tab:blue")
    wave_axis.set(ylabel="amplitude", title=f"{Path(audio_path).name}: {hypothesis.text or '(no words)'}")

    mel = features[0].cpu().numpy().T
    mel_axis.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=[0, mel.shape[1] * hop, 0, mel.shape[0]])
    mel_axis.set(ylabel="mel bin", title="log-mel features (normalised)")

    post_axis.imshow(posteriors[:, shown].T, origin="lower", aspect="auto", cmap="Greys", vmin=0, vmax=1,
                     extent=[0, len(posteriors) * frame, -0.5, len(shown) - 0.5], interpolation="nearest")
    post_axis.set_yticks(range(len(shown)), ["␣" if tokens[i] == " " else tokens[i] for i in shown], fontsize=7)
    blank_axis = post_axis.twinx()
    blank_axis.plot((np.arange(len(posteriors)) + 0.5) * frame, posteriors[:, 0], color="tab:red", linewidth=0.8)
    blank_axis.set_ylim(0, 1.05)
    blank_axis.set_ylabel("P(blank)", color="tab:red")
    post_axis.set(ylabel="character", title="per-frame character posteriors (grey) and blank (red)")

    word_axis.set_ylim(0, 1)
    word_axis.set_yticks([])
    for number, word in enumerate(hypothesis.words):
        word_axis.axvspan(word.start, word.end, color="tab:green", alpha=0.25)
        word_axis.text((word.start + word.end) / 2, 0.7 if number % 2 else 0.3, word.word, ha="center",
                       va="center", fontsize=9)
    word_axis.set(xlabel="time (s)", title="decoded words", xlim=(0, duration))
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return hypothesis.text
