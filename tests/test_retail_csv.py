"""
The retail CSV parsers' numbers, on clean files that the vectorised integer path reads whole,
against Python's int() field by field; and the row-by-row path on the same rows.
"""

import numpy as np
import pytest

from gaussian_retina.shelves import retail_csv
from gaussian_retina.shelves.bad_input import InputReport
from gaussian_retina.shelves.retail_csv import (
    BENCHMARK_COLUMNS,
    parse_benchmark_csv,
    parse_sku110k_csv,
    read_box_csv,
)

# Negative, zero (three spellings), one digit, the longest the vectorised path reads (10
# characters, sign included) and beyond int32.
INTEGERS = ["-5", "0", "-0", "000", "7", "-123456789", "1234567890", "9999999999", "4294967296",
            "-1", "10", "0012"]


def _report(path):
    return InputReport("test", str(path))


@pytest.fixture
def no_slow_path(monkeypatch):
    """Fails a test if any column is walked field by field: a clean integer file never is."""

    def fail(col):
        raise AssertionError(f"slow path taken for {col[:3]}")

    monkeypatch.setattr(retail_csv, "_parse_column", fail)


def _sku_rows(values):
    rows = []
    for i in range(0, len(values) - 3, 2):
        x1, y1, x2, y2 = values[i : i + 4]
        rows.append(f"img_{i % 3}.jpg,{x1},{y1},{x2},{y2},object,640,480")
    return rows


def test_sku110k_fast_path_reads_negative_zero_and_large_integers(tmp_path, no_slow_path):
    rows = _sku_rows(INTEGERS)
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(rows) + "\n")
    table = parse_sku110k_csv(str(path), _report(path))
    expected = [[float(int(v)) for v in r.split(",")[1:5]] for r in rows]
    assert table.boxes.dtype == np.float64
    assert table.boxes.tolist() == expected
    assert table.box_loc.tolist() == list(range(1, len(rows) + 1))
    assert table.image_hw.tolist() == [[480, 640]] * len(table.image_names)


def test_random_integers_match_int_field_by_field(tmp_path, no_slow_path):
    rng = np.random.default_rng(0)
    # Every length from 1 to 10 characters, either sign.
    digits = rng.integers(1, 10, size=(400, 4))
    values = (rng.integers(0, 10, size=(400, 4)) * 10.0 ** (digits - 1)).astype(np.int64)
    values = values + rng.integers(0, 10 ** (digits - 1).clip(max=8))
    values = values * np.where(rng.random((400, 4)) < 0.3, -1, 1)
    lines = ["image_name,x1,y1,x2,y2,class"]
    lines += [f"p{i // 7}.jpg," + ",".join(map(str, v)) + ",brand" for i, v in enumerate(values)]
    path = tmp_path / "benchmark.csv"
    path.write_text("\n".join(lines) + "\n")
    table = parse_benchmark_csv(str(path), _report(path))
    assert table.boxes.tolist() == values.astype(np.float64).tolist()
    assert table.box_loc.tolist() == list(range(2, 402))  # the header is line 1
    assert table.image_names == [f"p{i}.jpg" for i in range(58)]
    assert table.box_image.tolist() == [i // 7 for i in range(400)]


def test_slow_path_gives_the_same_numbers(tmp_path):
    # One float in x1 sends that column down the field-by-field path; the other rows' values
    # must not change, in that column or the others.
    rows = _sku_rows(INTEGERS)
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(rows) + "\n")
    fast = parse_sku110k_csv(str(path), _report(path)).boxes
    mixed = rows + ["img_9.jpg,1.5,-2.25e1,+3,4,object,640,480"]
    path2 = tmp_path / "mixed.csv"
    path2.write_text("\n".join(mixed) + "\n")
    slow = parse_sku110k_csv(str(path2), _report(path2)).boxes
    assert slow[:-1].tolist() == fast.tolist()
    assert slow[-1].tolist() == [1.5, -22.5, 3.0, 4.0]


@pytest.mark.parametrize("field, shown", [("1e400", "'1e400'"), ("nan", "'nan'"), ("1_000", "'1_000'"),
                                          ("0x10", "'0x10'"), ("", "''"), ("-", "'-'")])
def test_a_field_that_is_not_a_finite_number_names_its_line(tmp_path, field, shown):
    rows = _sku_rows(INTEGERS)
    rows.insert(2, f"img_1.jpg,1,2,{field},4,object,640,480")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(rows) + "\n")
    report = _report(path)
    table = parse_sku110k_csv(str(path), report)
    assert len(table.boxes) == len(rows) - 1
    (problem,) = report.problems()
    assert problem.reason == "non-numeric field"
    assert problem.location == "line 3"
    assert problem.detail == f"x2 = {shown}"
    # The good rows keep their values and their own line numbers.
    assert table.box_loc.tolist() == [1, 2] + list(range(4, len(rows) + 1))


def test_read_box_csv_tells_the_layouts_apart(tmp_path):
    sku = tmp_path / "sku.csv"
    sku.write_text("a.jpg,-3,0,12345,9999999999,object,100,50\n")
    bench = tmp_path / "bench.csv"
    bench.write_text(",".join(BENCHMARK_COLUMNS) + "\na.jpg,-3,0,12345,9999999999,x\n")
    for path in (sku, bench):
        table = read_box_csv(str(path))
        assert table.boxes.tolist() == [[-3.0, 0.0, 12345.0, 9999999999.0]]
    assert read_box_csv(str(sku)).image_hw.tolist() == [[50, 100]]
    assert np.isnan(read_box_csv(str(bench)).image_hw).all()
