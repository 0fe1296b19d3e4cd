"""Writing files atomically: a temporary file beside the target, renamed into place when complete,
so that a crash or an interrupt never leaves a half-written manifest, transcript or checkpoint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as temporary:
        temporary.write(text)
    move_into_place(temporary.name, path)


def move_into_place(temporary: str, path: Path) -> None:
    """Rename a finished temporary file into place, with the permissions a new file would get."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)
