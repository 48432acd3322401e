"""A small labelled set for the segmenter: red squares (class 1) and blue discs (class 2)."""

from __future__ import annotations

import pytest
from helpers import write_shapes_set


@pytest.fixture
def shapes_set(tmp_path):
    return write_shapes_set(tmp_path / "shapes", 16)
