"""asr: DeepSpeech2-style speech recognition. ``load_model()`` gives the bundled model, ready to transcribe."""

from asr.segment import SegmentOptions
from asr.transcribe import Transcript, transcribe, transcribe_files

__all__ = ["Recognizer", "SegmentOptions", "Transcript", "load_model", "transcribe", "transcribe_files"]


def __getattr__(name: str):
    """``Recognizer`` and ``load_model`` are imported when first used: with them comes torch, which
    transcription with an ONNX model does without."""
    if name in ("Recognizer", "load_model"):
        from asr import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
