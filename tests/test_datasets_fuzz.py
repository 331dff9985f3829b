"""A short run of tests/fuzz_parsers.py (the full run, >= 1,000 files, is in results/)."""

import re
import subprocess
import sys

import pytest

from common import ROOT, SHARED_DATA


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real shelf data absent: {SHARED_DATA}")
def test_corrupted_real_annotations_give_clear_errors_or_counted_skips():
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz_parsers.py"), "--files", "24", "--seed", "1234"],
        capture_output=True, text=True,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "crashes (anything but a clear error): 0" in out
    assert "accounting failures (rows lost silently): 0" in out
    rows = re.findall(r"^\| (\w+) \| (named|auto) \| (error|skip) \| (\w+) \| (\d+) \|$", out, re.M)
    assert sum(int(r[4]) for r in rows) == 24 * 4
    outcomes = {r[3] for r in rows}
    assert "loaded" in outcomes and "AnnotationError" in outcomes
