"""Word timings as SubRip (SRT) and WebVTT subtitles."""

from __future__ import annotations

from collections.abc import Sequence

from asr.decoding import Word

MAX_LINE_CHARS = 42  # the usual broadcast limit per subtitle line
MAX_CUE_SECONDS = 6.0
MAX_PAUSE_SECONDS = 1.0  # a longer pause starts a new cue


def group_cues(words: Sequence[Word]) -> list[list[Word]]:
    """Split words into cues of at most two lines, six seconds, and no long pause inside."""
    cues: list[list[Word]] = []
    for word in words:
        cue = cues[-1] if cues else None
        if (cue is None or word.start - cue[-1].end > MAX_PAUSE_SECONDS or word.end - cue[0].start > MAX_CUE_SECONDS
                or len(" ".join(w.word for w in [*cue, word])) > 2 * MAX_LINE_CHARS):
            cues.append([word])
        else:
            cue.append(word)
    return cues


def cue_lines(cue: Sequence[Word]) -> str:
    """One line, or two split at the word boundary nearest the middle when it is too long."""
    text = " ".join(word.word for word in cue)
    if len(text) <= MAX_LINE_CHARS:
        return text
    breaks = [i for i, char in enumerate(text) if char == " "]
    middle = min(breaks, key=lambda i: abs(i - len(text) / 2))
    return text[:middle] + "\n" + text[middle + 1:]


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{milliseconds:03d}"


def to_srt(words: Sequence[Word]) -> str:
    return "".join(
        f"{number}\n{_timestamp(cue[0].start, ',')} --> {_timestamp(cue[-1].end, ',')}\n{cue_lines(cue)}\n\n"
        for number, cue in enumerate(group_cues(words), start=1)
    )


def to_vtt(words: Sequence[Word]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(cue[0].start, '.')} --> {_timestamp(cue[-1].end, '.')}\n{cue_lines(cue)}\n\n"
        for cue in group_cues(words)
    )
