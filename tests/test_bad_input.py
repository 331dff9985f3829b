"""
InputReport on its own: what it records, the problems and message lines it gives back, the
summary line and the error message, and what finish() does under each policy.
"""

import logging

import numpy as np
import pytest

from gaussian_retina.shelves.bad_input import (
    BAD_INPUT_POLICIES,
    AnnotationError,
    InputReport,
    Problem,
    check_bad_input_policy,
)

LOGGER = "gaussian_retina.shelves.bad_input"


@pytest.fixture
def caplog(caplog):
    """caplog on the package's logger itself, whether or not it propagates to the root
    (Detectron2's setup_logger, run by other tests, stops it); propagation is off inside, so
    each record is seen once either way."""
    logger = logging.getLogger("gaussian_retina")
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate


def test_policies():
    assert BAD_INPUT_POLICIES == ("error", "skip")
    assert check_bad_input_policy("error") == "error"
    assert check_bad_input_policy("skip") == "skip"
    for bad in ("ignore", "Error", ""):
        with pytest.raises(ValueError) as e:
            check_bad_input_policy(bad)
        assert str(e.value) == (
            f"Unknown bad-input policy {bad!r}; expected one of ('error', 'skip')")


def test_problem_and_error():
    assert str(Problem("a.csv", "line 3", "bad", "x = 'q'")) == "a.csv, line 3: bad (x = 'q')"
    assert str(Problem("a.csv", "line 3", "bad", "")) == "a.csv, line 3: bad"
    e = AnnotationError("msg")
    assert str(e) == "msg" and e.problems == [] and isinstance(e, ValueError)
    p = Problem("f", "line 1", "r", "")
    assert AnnotationError("m", (p,)).problems == [p]


def test_add_records_rows_by_reason_and_problems_in_order():
    r = InputReport("ds", "src")
    r.add("wrong", "a.csv", [], ["never"])  # nothing to record
    assert r.num_problems == 0 and r.rows_dropped == {} and r.problems() == []
    r.add("wrong", "a.csv", np.array([[3], [5]]), ["d3", "d5"])
    r.add("odd", ["b.txt", "c.txt"], [7, 1], unit="annotation index")
    r.add("wrong", ["a.csv", "a.csv"], [9, 10], ["d9"])
    r.add("missing", "a.csv", [11, 12, 13], ["shared"], grouped=True)
    r.add_images("missing", 1)
    r.add_images("missing", 2)
    r.add_images("other", 0)
    assert list(r.rows_dropped.items()) == [("wrong", 4), ("odd", 2), ("missing", 3)]
    assert dict(r.images_dropped) == {"missing": 3}
    assert r.num_problems == 9
    assert r.problems() == [
        Problem("a.csv", "line 3", "wrong", "d3"),
        Problem("a.csv", "line 5", "wrong", "d5"),
        Problem("b.txt", "annotation index 7", "odd", ""),
        Problem("c.txt", "annotation index 1", "odd", ""),
        Problem("a.csv", "line 9", "wrong", "d9"),
        Problem("a.csv", "line 10", "wrong", ""),
        Problem("a.csv", "line 11", "missing", "shared"),
        Problem("a.csv", "line 12", "missing", "shared"),
        Problem("a.csv", "line 13", "missing", "shared"),
    ]
    assert r.problems(limit=3) == r.problems()[:3]
    assert r.problems(limit=2) == r.problems()[:2]
    assert r.problems(limit=5) == r.problems()[:5]
    assert r.counts_by_reason() == "wrong: 4 rows; odd: 2 rows; missing: 3 rows of 3 images"


def test_details_beyond_twenty_are_not_kept():
    r = InputReport("ds", "src")
    r.add("bad", "a.csv", range(1, 31), [f"d{i}" for i in range(1, 31)])
    assert [p.detail for p in r.problems()] == [f"d{i}" for i in range(1, 21)] + [""] * 10


def test_quoted_lines_and_their_limit():
    r = InputReport("ds", "src")
    r.add("one", "a.csv", [4], ["why"], grouped=True)
    r.add("runs", "a.csv", [9, 2, 3, 4, 7, 4], ["cause"], grouped=True)
    r.add("bare", "a.csv", [20, 21], grouped=True)
    r.add("split", ["x.txt", "y.txt"], [1, 2], ["p", "q"], grouped=True)
    r.add("row", "a.csv", [30, 31, 32], ["r30"])
    assert r.quoted() == [
        "a.csv, line 4: one (why)",
        "a.csv, lines 2-4, 7, 9 (6 rows): runs (cause)",
        "a.csv, lines 20-21 (2 rows): bare",
        "x.txt, line 1: split (p)",
        "y.txt, line 2: split (q)",
        "a.csv, line 30: row (r30)",
        "a.csv, line 31: row",
        "a.csv, line 32: row",
    ]
    assert r.quoted(limit=4) == r.quoted()[:4]
    assert r.quoted(limit=7) == r.quoted()[:7]
    assert r.quoted(limit=3) == r.quoted()[:3]


def test_the_limit_holds_for_rows_sharing_one_cause():
    r = InputReport("ds", "src")
    r.add("missing", "a.csv", [1, 2], ["no image a.jpg"], grouped=True)
    r.add("missing", "a.csv", [3], ["no image b.jpg"], grouped=True)
    assert r.quoted(limit=1) == ["a.csv, lines 1-2 (2 rows): missing (no image a.jpg)"]


def test_one_file_named_once_per_row():
    r = InputReport("ds", "src")
    r.add("wrong", ["a.csv"] * 3, [4, 5, 6])
    assert [str(p) for p in r.problems()] == [
        "a.csv, line 4: wrong", "a.csv, line 5: wrong", "a.csv, line 6: wrong"
    ]
    assert r.quoted() == [str(p) for p in r.problems()]


def test_a_report_before_cleaning_has_kept_nothing():
    assert InputReport("shelves", "ann.csv").summary() == (
        "Dataset 'shelves' (ann.csv): kept 0 images, 0 boxes; dropped 0 rows; "
        "clipped 0 boxes partly outside their image; dropped 0 degenerate boxes "
        "(thinner than the minimum after clipping)")


def test_line_ranges_beyond_six_runs_are_cut():
    r = InputReport("ds", "src")
    r.add("gap", "a.csv", [1, 3, 5, 7, 9, 11, 12, 15], ["c"], grouped=True)
    r.add("six", "a.csv", [1, 3, 5, 7, 9, 11, 12], ["c"], grouped=True)
    assert r.quoted() == [
        "a.csv, lines 1, 3, 5, 7, 9, 11-12, ... (8 rows): gap (c)",
        "a.csv, lines 1, 3, 5, 7, 9, 11-12 (7 rows): six (c)",
    ]


def _filled():
    r = InputReport("shelves", "ann.csv")
    r.kept_images, r.kept_boxes = 1234, 56789
    return r


def test_summary_lines():
    r = _filled()
    assert r.summary() == (
        "Dataset 'shelves' (ann.csv): kept 1,234 images, 56,789 boxes; dropped 0 rows; "
        "clipped 0 boxes partly outside their image; dropped 0 degenerate boxes "
        "(thinner than the minimum after clipping)")
    r.background_images = 1001
    r.add("wrong", "ann.csv", range(1, 1201))
    r.add("missing", "ann.csv", [5], grouped=True)
    r.add_images("missing", 1)
    r.add_images("image left without boxes", 2345)
    r.clipped, r.degenerate = 3000, 4
    assert r.summary() == (
        "Dataset 'shelves' (ann.csv): kept 1,234 images, 56,789 boxes (1,001 images without "
        "boxes); dropped 1,201 rows [wrong: 1,200 rows; missing: 1 rows of 1 images]; "
        "dropped 2,345 images whose rows were all dropped; clipped 3,000 boxes partly outside "
        "their image; dropped 4 degenerate boxes (thinner than the minimum after clipping)")


def test_error_message_quotes_twenty_then_points_to_the_rest():
    tail = ("Fix the annotations, or set cfg.DATASETS.BAD_INPUT_POLICY = 'skip' "
            "(register_retail_dataset(..., bad_input_policy='skip')) to drop them, counted; "
            "tools/validate_dataset.py lists every defect.")
    r = InputReport("shelves", "ann.csv")
    r.add("bad", "ann.csv", range(1, 20))
    lines = r.error_message().split("\n")
    assert lines[0] == "Dataset 'shelves': 19 malformed rows in ann.csv [bad: 19 rows]:"
    assert lines[1:20] == [f"  ann.csv, line {i}: bad" for i in range(1, 20)]
    assert lines[20:] == [tail]
    r.add("worse", "ann.csv", [2000], ["d"])
    lines = r.error_message().split("\n")
    assert lines[0] == (
        "Dataset 'shelves': 20 malformed rows in ann.csv [bad: 19 rows; worse: 1 rows]:")
    assert lines[20] == "  ann.csv, line 2000: worse (d)"
    assert lines[21:] == [
        "  ... (every one: AnnotationError.problems, or tools/validate_dataset.py)", tail]


def test_finish_raises_under_error_and_logs_under_skip(caplog):
    r = _filled()
    r.add("bad", "ann.csv", range(1, 8), [f"d{i}" for i in range(1, 8)])
    with pytest.raises(AnnotationError) as e:
        r.finish("error")
    assert str(e.value) == r.error_message()
    assert e.value.problems == r.problems()
    with pytest.raises(ValueError, match="Unknown bad-input policy"):
        r.finish("ignore")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        r.finish("skip")
    records = [(rec.levelno, rec.getMessage()) for rec in caplog.records]
    assert records == [(logging.WARNING, f"Skipped: ann.csv, line {i}: bad (d{i})")
                       for i in range(1, 6)] + [(logging.WARNING, r.summary())]


@pytest.mark.parametrize("policy", BAD_INPUT_POLICIES)
def test_finish_with_nothing_wrong_logs_the_summary_at_info(caplog, policy):
    r = _filled()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        r.finish(policy)
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records] == [
        (logging.INFO, r.summary())]
    caplog.clear()
    r.degenerate = 1  # boxes dropped as degenerate are worth a warning
    with caplog.at_level(logging.INFO, logger=LOGGER):
        r.finish(policy)
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records] == [
        (logging.WARNING, r.summary())]
