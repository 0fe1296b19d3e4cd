"""Shared fixtures: the small corpora in tests/data prepared once per session, and CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
AN4 = DATA / "an4"
FSDD = DATA / "fsdd"
SAMPLES = DATA / "samples"

# The tests' tensors are tiny: one thread avoids thread start-up and contention with
# whatever else is using the CPU (a training run, say), which otherwise costs seconds.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def an4_prepared(tmp_path_factory) -> Path:
    """tests/data/an4 prepared into a fresh folder (one of its two speakers held out for dev)."""
    from asr.corpora import prepare_an4

    out = tmp_path_factory.mktemp("an4_prepared")
    counts = prepare_an4(AN4, out, dev_speakers=1, seed=0)
    assert set(counts) == {"train", "dev"} and sum(counts.values()) == 12
    return out


@pytest.fixture(scope="session")
def fsdd_prepared(tmp_path_factory) -> Path:
    from asr.corpora import prepare_fsdd

    out = tmp_path_factory.mktemp("fsdd_prepared")
    counts = prepare_fsdd(FSDD, out, dev_speakers=1, seed=0)
    assert counts == {"train": 10, "dev": 10}
    return out


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
