"""Word timings as SubRip (SRT) and WebVTT subtitles."""

from __future__ import annotations

from collections.abc import Sequence

from asr.decoding import Word

MAX_LINE_CHARS = 42  # the usual broadcast limit per subtitle line
MAX_CUE_SECONDS = 6.0
MAX_PAUSE_SECONDS = 1.0  # a longer pause starts a new cue


def layout(words: Sequence[str]) -> list[str] | None:
    """The words as one line, or two lines broken where they are most even, each at most
    MAX_LINE_CHARS long; None when they do not fit. A single word too long for a line gets one of its own."""
    text = " ".join(words)
    if len(text) <= MAX_LINE_CHARS or len(words) == 1:
        return [text]
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    fitting = [pair for pair in splits if max(map(len, pair)) <= MAX_LINE_CHARS]
    return list(min(fitting, key=lambda pair: (abs(len(pair[0]) - len(pair[1])), len(pair[1])))) if fitting else None


def group_cues(words: Sequence[Word]) -> list[list[Word]]:
    """Split words into cues that fit two lines, last at most six seconds, and hold no long pause."""
    cues: list[list[Word]] = []
    for word in words:
        cue = cues[-1] if cues else None
        if (cue is None or word.start - cue[-1].end > MAX_PAUSE_SECONDS or word.end - cue[0].start > MAX_CUE_SECONDS
                or layout([w.word for w in [*cue, word]]) is None):
            cues.append([word])
        else:
            cue.append(word)
    return cues


def cue_lines(cue: Sequence[Word]) -> str:
    return "\n".join(layout([word.word for word in cue]) or [])


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{milliseconds:03d}"


def srt_cue(number: int, cue: Sequence[Word]) -> str:
    return f"{number}\n{_timestamp(cue[0].start, ',')} --> {_timestamp(cue[-1].end, ',')}\n{cue_lines(cue)}\n\n"


def vtt_cue(cue: Sequence[Word]) -> str:
    return f"{_timestamp(cue[0].start, '.')} --> {_timestamp(cue[-1].end, '.')}\n{cue_lines(cue)}\n\n"


VTT_HEADER = "WEBVTT\n\n"


def to_srt(words: Sequence[Word]) -> str:
    return "".join(srt_cue(number, cue) for number, cue in enumerate(group_cues(words), start=1))


def to_vtt(words: Sequence[Word]) -> str:
    return VTT_HEADER + "".join(vtt_cue(cue) for cue in group_cues(words))
