"""Plain helpers the tests import (``from helpers import ...``): where the test data lives, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
AN4 = DATA / "an4"
FSDD = DATA / "fsdd"
SAMPLES = DATA / "samples"


def run_cli(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run the ``asr`` command exactly as the console script does (``cli.main``), in a subprocess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str | os.PathLike) -> str:
    """Exit status 2, no traceback, and exactly one non-empty stderr line: ``error: ...`` naming ``names``."""
    assert "Traceback" not in result.stderr, f"traceback instead of a one-line error:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert str(name) in lines[0], f"{name} not named in {lines[0]!r}"
    assert result.returncode == 2, f"exit status {result.returncode}, expected 2"
    return lines[0]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


# Runs the command as the console script does, then lists every module the process imported.
_LIST_MODULES = """
import json, sys
import cli
modules = sys.argv.pop(1)
try:
    cli.main()
finally:
    with open(modules, "w") as file:
        json.dump(sorted(sys.modules), file)
"""


def run_cli_listing_modules(folder: Path, *args: str | os.PathLike) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``run_cli``, and every module the command imported (written to a file in ``folder``)."""
    import json

    listing = folder / "modules.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _LIST_MODULES, str(listing), *map(str, args)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    return result, json.loads(listing.read_text())

