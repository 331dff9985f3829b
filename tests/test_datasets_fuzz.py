"""A short run of tools/fuzz_parsers.py (the full run, >= 1,000 files, is in results/)."""

import importlib.util
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real shelf data absent: {SHARED_DATA}")
def test_corrupted_real_annotations_give_clear_errors_or_counted_skips(tmp_path):
    path = Path(__file__).resolve().parents[1] / "tools" / "fuzz_parsers.py"
    spec = importlib.util.spec_from_file_location("fuzz_parsers", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    stats, crashes, leaks = tool.fuzz(24, seed=1234, work=str(tmp_path))
    assert crashes == [] and leaks == []
    assert sum(stats.values()) == 24 * 4
    outcomes = {k[3] for k in stats}
    assert "loaded" in outcomes and "AnnotationError" in outcomes
