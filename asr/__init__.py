"""asr: DeepSpeech2-style speech recognition. ``load_model()`` gives the bundled model, ready to transcribe."""

from asr.checkpoint import Recognizer, load_model
from asr.transcribe import Transcript, transcribe_files

__all__ = ["Recognizer", "Transcript", "load_model", "transcribe_files"]
