"""asr: DeepSpeech2-style speech recognition. ``load_model()`` gives the bundled model, ready to transcribe."""

from asr.recognizer import Recognizer, load_model
from asr.segment import SegmentOptions
from asr.transcribe import Transcript, transcribe, transcribe_files

__all__ = ["Recognizer", "SegmentOptions", "Transcript", "load_model", "transcribe", "transcribe_files"]
