"""What a wheel ships. .ci/run builds one, installs it away from the source tree and transcribes
a bundled sample with it; this checks the package-data patterns behind that without a build."""

from __future__ import annotations

from pathlib import Path

import pytest

import asr
from asr.checkpoint import DEFAULT_MODEL
from helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_the_bundled_model_lm_and_samples_are_package_data():
    """A file outside the package (data/model.pt, as the default model was) is missing from an install."""
    package = Path(asr.__file__).resolve().parent
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["asr"]
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    samples = set((DEFAULT_MODEL.parent / "samples").iterdir())
    assert DEFAULT_MODEL.is_relative_to(package) and len(samples) == 4
    assert {DEFAULT_MODEL, DEFAULT_MODEL.with_name("model.lm.arpa"), *samples} <= shipped
