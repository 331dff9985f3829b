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


def _bench(tmp_path, body, name="bench.csv"):
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    report = _report(path)
    return parse_benchmark_csv(str(path), report), report


def test_bom_crlf_header_blank_lines_and_no_final_newline(tmp_path):
    body = (b"\xef\xbb\xbfImage_Name, X1,y1 ,x2,Y2,class\r\n\r\n"
            b"a.jpg,1,2,3,4,x\r\n\r\nb.jpg,5,6,7,8,y")
    table, report = _bench(tmp_path, body)
    assert report.problems() == []
    assert table.image_names == ["a.jpg", "b.jpg"]
    assert table.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert table.box_loc.tolist() == [3, 5]


def test_only_the_first_non_empty_line_can_be_a_header(tmp_path):
    header = ",".join(BENCHMARK_COLUMNS)
    table, report = _bench(tmp_path, f"\n{header}\na.jpg,1,2,3,4,x\n{header}\n")
    assert table.box_loc.tolist() == [3]
    (problem,) = report.problems()
    assert (problem.location, problem.reason, problem.detail) == (
        "line 4", "non-numeric field", "x1 = 'x1'")


def test_an_empty_file_gives_an_empty_table(tmp_path):
    for body in ("", "\n\n"):
        table, report = _bench(tmp_path, body)
        assert report.problems() == []
        assert table.image_names == [] and table.boxes.shape == (0, 4)
        assert table.box_image.tolist() == [] and table.box_loc.tolist() == []


def test_wrong_column_counts_are_reported_and_the_other_rows_kept(tmp_path):
    rows = ["a.jpg,1,2,3,4,x", "a.jpg,1,2,3", "b.jpg,5,6,7,8,x", "b.jpg,1,2,3,4,x,extra,more",
            "c.jpg,9,10,11,12,x"]
    table, report = _bench(tmp_path, "\n".join(rows) + "\n")
    assert [(p.location, p.reason, p.detail) for p in report.problems()] == [
        ("line 2", "wrong column count", "4 fields, expected 6"),
        ("line 4", "wrong column count", "8 fields, expected 6"),
    ]
    assert table.image_names == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert table.box_loc.tolist() == [1, 3, 5]
    assert table.box_image.tolist() == [0, 1, 2]


def test_a_wrong_row_among_a_header_and_blank_lines(tmp_path):
    header = ",".join(BENCHMARK_COLUMNS)
    table, report = _bench(tmp_path, f"{header}\n\na.jpg,1,2,3\n\nb.jpg,5,6,7,8,x\n\n")
    assert [(p.location, p.reason) for p in report.problems()] == [("line 3", "wrong column count")]
    assert table.image_names == ["b.jpg"] and table.box_loc.tolist() == [5]


def test_a_first_line_that_is_not_utf8(tmp_path):
    table, report = _bench(tmp_path, b"caf\xe9.jpg,1,2,3,4,x\nb.jpg,5,6,7,8,x\n")
    assert report.problems() == []
    assert table.image_names == ["caf\udce9.jpg", "b.jpg"]  # undecodable bytes kept as-is
    assert table.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_details_are_quoted_for_the_first_twenty_bad_rows(tmp_path):
    rows = ["a.jpg,1,2,3,4,x"] + ["a.jpg,1,2,3,x"] * 22 + ["a.jpg,q,2,3,4,x"] * 22
    table, report = _bench(tmp_path, "\n".join(rows) + "\n")
    problems = report.problems()
    assert len(problems) == 44
    wrong, nonnum = problems[:22], problems[22:]
    assert [p.detail for p in wrong] == ["5 fields, expected 6"] * 20 + ["", ""]
    assert [p.detail for p in nonnum] == ["x1 = 'q'"] * 20 + ["", ""]
    assert [p.location for p in nonnum] == [f"line {n}" for n in range(24, 46)]
    assert table.box_loc.tolist() == [1]


def test_a_row_bad_in_two_columns_is_reported_once_with_its_first_column(tmp_path):
    rows = ["a.jpg,1,2,3,4,x", "a.jpg,1,two,3,four,x", "a.jpg,5,6,seven,8,x"]
    table, report = _bench(tmp_path, "\n".join(rows) + "\n")
    assert [(p.location, p.detail) for p in report.problems()] == [
        ("line 2", "y1 = 'two'"), ("line 3", "x2 = 'seven'")]
    assert table.boxes.tolist() == [[1, 2, 3, 4]]


def test_a_long_bad_field_is_shown_cut_at_forty_characters(tmp_path):
    long = "z" * 41
    exact = "y" * 40
    table, report = _bench(tmp_path, f"a.jpg,{long},2,3,4,x\na.jpg,1,{exact},3,4,x\n")
    assert [p.detail for p in report.problems()] == [
        "x1 = '" + "z" * 40 + "...'", "y1 = '" + exact + "'"]


@pytest.mark.parametrize("field, value", [
    ("+5", 5.0), (" 7 ", 7.0), ("1.5e2", 150.0), (".5", 0.5), ("5.", 5.0), ("-2.5E-1", -0.25),
    ("12345678901", 12345678901.0), ("-1234567890", -1234567890.0), ("00000000001", 1.0),
])
def test_decimal_spellings_are_read_as_numbers(tmp_path, field, value):
    table, report = _bench(tmp_path, f"a.jpg,{field},2,3,4,x\nb.jpg,10,20,30,40,x\n")
    assert report.problems() == []
    assert table.boxes.tolist() == [[value, 2, 3, 4], [10, 20, 30, 40]]


@pytest.mark.parametrize("field", ["1-2", "--1", "1e", "e5", ".", "+", "1.2.3", "inf", "1 2", "1:5",
                                   "/"])
def test_malformed_numbers_are_non_numeric(tmp_path, field):
    table, report = _bench(tmp_path, f"a.jpg,10,2,3,4,x\nb.jpg,{field},2,3,4,x\n")
    assert [(p.location, p.reason) for p in report.problems()] == [("line 2", "non-numeric field")]
    assert table.boxes.tolist() == [[10, 2, 3, 4]]
    assert table.image_names == ["a.jpg"]


def test_a_field_that_is_not_utf8_is_shown_escaped(tmp_path):
    table, report = _bench(tmp_path, b"a.jpg,1,2,3,4,x\nb.jpg,\xff1,2,3,4,x\nc.jpg,1,2,3,\xe9,x\n")
    assert [(p.location, p.detail) for p in report.problems()] == [
        ("line 2", "x1 = '\\\\xff1'"), ("line 3", "y2 = '\\\\xe9'")]
    assert table.image_names == ["a.jpg"]


def test_float_columns_with_an_empty_field(tmp_path):
    table, report = _bench(tmp_path, "a.jpg,1.5,2,3,4,x\nb.jpg,,2,3,4,x\nc.jpg,2.5,2,3,4,x\n")
    assert [(p.location, p.detail) for p in report.problems()] == [("line 2", "x1 = ''")]
    assert table.boxes[:, 0].tolist() == [1.5, 2.5]


def test_image_grouping_ids_and_names_long_or_with_odd_bytes(tmp_path):
    long_a, long_b = "a" * 300 + ".jpg", "a" * 299 + "b.jpg"
    for names in (["b.jpg", "a.jpg", "b.jpg", "c.jpg", "a.jpg"],
                  [long_b, long_a, long_b, "c.jpg", long_a],
                  ["b\x00.jpg", "b\x00.jpg\x00", "b\x00.jpg", "c.jpg", "b\x00.jpg\x00"],
                  ["b\x01.jpg", "b\x01.jpg\x01", "b\x01.jpg", "c.jpg", "b\x01.jpg\x01"]):
        rows = [f"{n},{i},0,{i + 1},1,x" for i, n in enumerate(names)]
        table, report = _bench(tmp_path, "\n".join(rows) + "\n")
        assert report.problems() == []
        assert table.image_names == [names[0], names[1], names[3]]
        assert table.box_image.tolist() == [0, 1, 0, 2, 1]
        # 1-based rank of each name in sorted order.
        ranks = {n: r for r, n in enumerate(sorted(set(names)), 1)}
        assert table.image_ids.tolist() == [ranks[names[0]], ranks[names[1]], ranks[names[3]]]
        assert table.boxes[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_a_short_last_row_after_longer_ones(tmp_path):
    # The last row's fields are the file's last bytes: shorter than the column's longest.
    long = "p" * 100 + ".jpg"
    rows = [f"{long},1000,2000,3000,4000,o,6400,4800", "a.jpg,1,2,3,4,o,6,5"]
    table, report, _ = _sku(tmp_path, rows)
    assert report.problems() == []
    assert table.image_names == [long, "a.jpg"]
    assert table.boxes.tolist() == [[1000, 2000, 3000, 4000], [1, 2, 3, 4]]
    assert table.image_hw.tolist() == [[4800, 6400], [5, 6]]
    path = tmp_path / "short_end.csv"
    path.write_text(f"{long},1000,2000,3000,4000,o,6400,4800\na,1,2,3,4,o,6,5")
    table = parse_sku110k_csv(str(path), _report(path))
    assert table.image_names == [long, "a"] and table.image_hw.tolist() == [[4800, 6400], [5, 6]]


def test_names_that_differ_only_in_trailing_bytes_are_different_images(tmp_path):
    rows = ["ab,1,2,3,4,x", "ab ,1,2,3,4,x", "abc,1,2,3,4,x", "ab,1,2,3,4,x"]
    table, _ = _bench(tmp_path, "\n".join(rows) + "\n")
    assert table.image_names == ["ab", "ab ", "abc"]
    assert table.box_image.tolist() == [0, 1, 2, 0]


def _sku(tmp_path, rows):
    path = tmp_path / "sku.csv"
    path.write_text("\n".join(rows) + "\n")
    report = _report(path)
    return parse_sku110k_csv(str(path), report), report, str(path)


def test_sku110k_image_sizes_that_are_not_positive_integers(tmp_path):
    rows = ["a.jpg,1,2,3,4,o,640,480", "a.jpg,1,2,3,4,o,0,480", "a.jpg,1,2,3,4,o,640,0",
            "b.jpg,1,2,3,4,o,1.5,480", "b.jpg,1,2,3,4,o,640,2.25", "b.jpg,1,2,3,4,o,-3,480",
            "b.jpg,1,2,3,4,o,1,1", "c.jpg,1,2,3,4,o,0.5,0.5"]
    table, report, _ = _sku(tmp_path, rows)
    assert [(p.location, p.reason, p.detail) for p in report.problems()] == [
        ("line 2", "invalid image size", "image_width=0, image_height=480"),
        ("line 3", "invalid image size", "image_width=640, image_height=0"),
        ("line 4", "invalid image size", "image_width=1.5, image_height=480"),
        ("line 5", "invalid image size", "image_width=640, image_height=2.25"),
        ("line 6", "invalid image size", "image_width=-3, image_height=480"),
        ("line 8", "invalid image size", "image_width=0.5, image_height=0.5"),
    ]
    assert table.image_names == ["a.jpg", "b.jpg"]
    assert table.image_hw.tolist() == [[480, 640], [1, 1]]
    assert table.box_loc.tolist() == [1, 7]
    assert table.box_image.tolist() == [0, 1]


def test_sku110k_a_size_differing_from_the_image_first_row(tmp_path):
    rows = ["b.jpg,1,2,3,4,o,30,50", "a.jpg,1,2,3,4,o,0,40", "a.jpg,5,6,7,8,o,60,40",
            "b.jpg,9,9,10,10,o,30,50", "a.jpg,1,1,2,2,o,61,40", "a.jpg,1,1,2,2,o,60,41"]
    table, report, path = _sku(tmp_path, rows)
    assert [(p.location, p.reason, p.detail) for p in report.problems()] == [
        ("line 2", "invalid image size", "image_width=0, image_height=40"),
        ("line 5", "inconsistent image size", "a.jpg: 61x40 here, 60x40 on line 3"),
        ("line 6", "inconsistent image size", "a.jpg: 60x41 here, 60x40 on line 3"),
    ]
    assert table.image_names == ["b.jpg", "a.jpg"]
    assert table.image_ids.tolist() == [2, 1] and table.image_ids.dtype == np.int64
    assert table.image_hw.tolist() == [[50, 30], [40, 60]]
    assert table.box_image.tolist() == [0, 1, 0]
    assert table.box_loc.tolist() == [1, 3, 4]
    assert table.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 10, 10]]
    assert table.sources == [path] and table.unit == "line"
    assert table.box_src.tolist() == [0, 0, 0] and table.box_src.dtype == np.int64


def test_sku110k_without_a_usable_row_gives_an_empty_table(tmp_path):
    for rows in (["a.jpg,1,2,3,4,o,0,5", "b.jpg,1,2,3,4,o,6,0"], [""]):
        table, report, _ = _sku(tmp_path, rows)
        assert len(report.problems()) == (2 if rows[0] else 0)
        assert table.image_names == [] and table.image_hw.shape == (0, 2)
        assert table.boxes.shape == (0, 4) and table.box_loc.tolist() == []


def test_benchmark_table_has_unknown_sizes_and_its_source(tmp_path):
    table, _ = _bench(tmp_path, "b.jpg,1,2,3,4,x\na.jpg,5,6,7,8,x\n")
    assert table.image_hw.shape == (2, 2) and np.isnan(table.image_hw).all()
    assert table.image_ids.tolist() == [2, 1]
    assert table.sources == [str(tmp_path / "bench.csv")] and table.unit == "line"
    assert table.box_src.tolist() == [0, 0] and table.box_src.dtype == np.int64
    assert table.box_loc.dtype == np.int64 and table.box_image.dtype == np.int64
    assert table.image_ids.dtype == np.int64
    assert table.iscrowd is None


@pytest.mark.parametrize("text, fmt", [
    ("a.jpg,1,2,3,4,o,6,5\n", "sku110k"),
    ("\ufeffIMAGE_NAME,x1,y1,x2,y2,class,image_width,image_height\n", "sku110k"),
    ("\n  \nimage_name,x1,y1,x2,y2,class\n", "benchmark"),
    ("a.jpg,1,2,3,4,o\n", "benchmark"),
    ("image_name,1,2,3,4,o\n", "benchmark"),
    ("\ufeff\n\na.jpg,1,2,3,4,o,6,5\n", "sku110k"),  # the byte-order mark, then blank lines
    (b"caf\xe9.jpg,1,2,3,4,o,6,5\n", "sku110k"),  # a Latin-1 name
    (b"\xff\xfe,1,2,3,4,o\n", "benchmark"),
])
def test_sniff_csv_format(tmp_path, text, fmt):
    path = tmp_path / "f.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert retail_csv.sniff_csv_format(str(path)) == fmt


def test_sniff_csv_format_errors(tmp_path):
    from gaussian_retina.shelves.bad_input import AnnotationError

    odd = tmp_path / "odd.csv"
    odd.write_text("\n\nimage_name,a,b,c,d,e,f,g\n")
    with pytest.raises(AnnotationError) as e:
        retail_csv.sniff_csv_format(str(odd))
    assert str(e.value) == (
        f"{odd}, line 3: cannot tell the CSV format: 8 fields; expected 8 (SKU-110K: "
        "image_name,x1,y1,x2,y2,class,image_width,image_height) or 6 (benchmark, header "
        "image_name,x1,y1,x2,y2,class). Pass fmt= explicitly.")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n \n")
    with pytest.raises(AnnotationError, match=r"^.*empty\.csv: the annotation file is empty$"):
        retail_csv.sniff_csv_format(str(empty))
    missing = tmp_path / "missing.csv"
    for fn in (retail_csv.sniff_csv_format, read_box_csv):
        with pytest.raises(FileNotFoundError, match=r"Annotation file not found: .*missing\.csv"):
            fn(str(missing))
    with pytest.raises(FileNotFoundError, match="datasets/README.md"):
        parse_sku110k_csv(str(missing), _report(missing))


def test_read_box_csv_raises_on_a_bad_row_and_logs_what_it_kept(tmp_path, caplog):
    import logging

    from gaussian_retina.shelves.bad_input import AnnotationError

    good = tmp_path / "good.csv"
    good.write_text("a.jpg,1,2,3,4,o,6,5\nb.jpg,1,2,3,4,o,6,5\na.jpg,1,1,2,2,o,6,5\n")
    # On the logger itself: Detectron2's setup_logger (run by other tests) stops it propagating.
    logger = logging.getLogger("gaussian_retina")
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with caplog.at_level(logging.INFO, logger="gaussian_retina.shelves.bad_input"):
            table = read_box_csv(str(good))
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert table.box_loc.tolist() == [1, 2, 3]
    assert f"Dataset 'good.csv' ({good}): kept 2 images, 3 boxes; dropped 0 rows" in caplog.text
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,1,2,3,4,o,6,5\na.jpg,1,2,3,4,o,6\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv, line 2: wrong column count"):
        read_box_csv(str(bad))
