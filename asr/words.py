"""Words cut out of connected speech into clips of their own, at the boundaries of a CTC alignment.

A corpus of isolated words from a handful of speakers (FSDD's digits: five) teaches a model
those speakers' voices more than the words. The same words said by the many speakers of a
connected-speech corpus (AN4's digit strings: 74 speakers) can be cut out and trained on
beside them. A trained model aligns each transcript to its audio (``aligned_spans``); each
word is cut at the midpoints between its aligned letters and its neighbours', so that the
whole word and none of the next one's core is in the clip, then trimmed of the quiet at its
ends as FSDD's recordings are.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import soundfile
from tqdm import tqdm

from asr.audio import SAMPLE_RATE, load_audio
from asr.augment import FSDD_TRIM_TOP_DB, trim_silence
from asr.data import SpeechDataset, Utterance, read_manifest, write_manifest
from asr.decoding import aligned_spans
from asr.evaluate import dataset_log_probs
from asr.recognizer import Recognizer
from asr.terminal import progress_bar_options
from asr.text import normalize_text


def word_boundaries(spans: Sequence[tuple[str, int, int]], frames: int) -> list[tuple[str, int, int]]:
    """(word, first frame, end frame) of each aligned word, its span widened to the midpoints between it
    and its neighbours' spans; the first starts at frame 0 and the last ends at ``frames``."""
    edges = [0] + [(end + next_start) // 2 for (_, _, end), (_, next_start, _) in zip(spans, spans[1:])] + [frames]
    return [(word, start, end) for (word, _, _), start, end in zip(spans, edges, edges[1:])]


def cut_words(recognizer: Recognizer, manifests: Sequence[str | os.PathLike], out: str | os.PathLike,
              words: Collection[str] | None = None, progress: bool = False) -> int:
    """Cut every word of the manifests' utterances (or only ``words``) into a 16 kHz FLAC clip under
    ``out/audio/`` and list the clips in ``out/words.jsonl``; returns how many were cut.

    Words that the alignment gives no frames of (a transcript longer than its audio can hold)
    and clips that are silent after trimming are left out.
    """
    out = Path(out)
    utterances = [utterance for manifest in manifests for utterance in read_manifest(manifest)]
    log_probs = dataset_log_probs(recognizer, SpeechDataset(utterances, recognizer.vocabulary), progress=progress)
    samples_per_frame = recognizer.frame_seconds * SAMPLE_RATE
    (out / "audio").mkdir(parents=True, exist_ok=True)
    clips: list[Utterance] = []
    for utterance, frames in tqdm(list(zip(utterances, log_probs)), desc="cutting words", unit="utt",
                                  **progress_bar_options(progress)):
        spans = [span for span in aligned_spans(frames, normalize_text(utterance.text), recognizer.vocabulary)
                 if span[2] > span[1]]
        audio = load_audio(utterance.audio_filepath)
        for number, (word, start, end) in enumerate(word_boundaries(spans, len(frames))):
            if words is not None and word not in words:
                continue
            word_audio = audio[round(start * samples_per_frame):round(end * samples_per_frame)]
            clip = trim_silence(word_audio, FSDD_TRIM_TOP_DB)
            if not clip.any():
                continue
            path = out / "audio" / f"{Path(utterance.audio_filepath).stem}-{number}-{word}.flac"
            soundfile.write(path, clip, SAMPLE_RATE, subtype="PCM_16")
            clips.append(Utterance(path.resolve(), len(clip) / SAMPLE_RATE, word))
    write_manifest(out / "words.jsonl", clips)
    return len(clips)
