"""What reaches the terminal: progress bars shown only when asked for, and C libraries' own
stderr output kept off it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def progress_bar_options(show: bool) -> dict:
    """tqdm options: a bar only when asked for, and then still off under TQDM_DISABLE=1
    (an explicit ``disable=False`` would override that environment variable)."""
    return {} if show else {"disable": True}


@contextlib.contextmanager
def quiet_c_stderr() -> Iterator[None]:
    """Send what C and C++ libraries write straight to file descriptor 2 (KenLM's loading banner,
    mpg123's notes on a damaged MP3) to /dev/null; Python's ``sys.stderr`` keeps the real stream."""
    sys.stderr.flush()
    saved, python_stderr = os.dup(2), sys.stderr
    try:
        with open(os.devnull, "w") as devnull, open(saved, "w", closefd=False, errors="backslashreplace") as real:
            sys.stderr = real
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                real.flush()
                os.dup2(saved, 2)
                sys.stderr = python_stderr
    finally:
        os.close(saved)
