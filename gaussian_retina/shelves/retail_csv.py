"""
The two retail CSV formats, parsed column-wise:

* SKU-110K: no header, ``image_name,x1,y1,x2,y2,class,image_width,image_height``.
* The generic product-detection benchmark (arXiv 1912.09476): header
  ``image_name,x1,y1,x2,y2,class``, no image size.

Both give absolute pixel XYXY boxes drawn on the pixels as stored (EXIF orientation not
applied). The fast path splits the whole file at once and converts each numeric column with
one ``map(int, ...)``; only a file that fails it is walked row by row to name the bad rows.
"""

import os
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .bad_input import AnnotationError, InputReport
from .box_table import BoxTable

__all__ = [
    "SKU110K_COLUMNS",
    "BENCHMARK_COLUMNS",
    "DECIMAL_NUMBER",
    "parse_sku110k_csv",
    "parse_benchmark_csv",
    "read_box_csv",
    "sniff_csv_format",
]

SKU110K_COLUMNS = ("image_name", "x1", "y1", "x2", "y2", "class", "image_width", "image_height")
BENCHMARK_COLUMNS = ("image_name", "x1", "y1", "x2", "y2", "class")

_INT_BYTES = np.zeros(256, dtype=bool)
_INT_BYTES[np.frombuffer(b"0123456789+-", np.uint8)] = True
_FLOAT_BYTES = _INT_BYTES.copy()
_FLOAT_BYTES[np.frombuffer(b".eE", np.uint8)] = True
# What a number may look like in an annotation file (CSV or YOLO); no hex, "nan", "inf" or "1_000".
DECIMAL_NUMBER = re.compile(rb"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _parse_column(col: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """
    Returns:
        values: (K,) float64, 0 where bad.
        bad: (K,) bool, fields that are not a finite number.
    """
    n = len(col)
    chars = np.frombuffer(b"".join(col), np.uint8)
    try:
        if _INT_BYTES[chars].all():
            values = np.fromiter(map(int, col), np.float64, n)
        elif _FLOAT_BYTES[chars].all():
            values = np.fromiter(map(float, col), np.float64, n)
        else:
            raise ValueError
        bad = ~np.isfinite(values)
        if not bad.any() and all(map(len, col)):
            return values, bad
    except (ValueError, OverflowError):
        pass
    # Slow path: some field is not a number; find which.
    values = np.zeros(n, dtype=np.float64)
    bad = np.zeros(n, dtype=bool)
    for i, field in enumerate(col):
        if DECIMAL_NUMBER.fullmatch(field):
            v = float(field)
            if np.isfinite(v):
                values[i] = v
                continue
        bad[i] = True
    return values, bad


def _show(field: bytes) -> str:
    text = field.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _separators(buf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """
    Returns:
        seps: offsets of every "," and "\n", in order.
        commas: (L,) number of commas on each line.
    """
    seps = np.flatnonzero((buf == 44) | (buf == 10))
    newline_at = np.flatnonzero(buf[seps] == 10)
    commas = np.diff(newline_at, prepend=-1) - 1
    return seps, commas


def _fields(seps: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """
    Field boundaries of lines that each hold exactly k fields, from their separators.

    Returns:
        starts, ends: (K, k) byte offsets; field j of row i is buf[starts[i, j]:ends[i, j]].
    """
    ends = seps.reshape(-1, k)
    starts = np.empty_like(seps)
    starts[0] = 0
    starts[1:] = seps[:-1] + 1
    return starts.reshape(-1, k), ends


_POW10 = 10 ** np.arange(10, dtype=np.int64)


def _parse_int_fields(buf: np.ndarray, s: np.ndarray, e: np.ndarray):
    """
    Vectorised parse of fields that are plain integers ("-"? digits, at most 10 chars).

    Returns:
        (K,) float64, or None when some field is anything else (the caller falls back).
    """
    if s.size == 0:
        return np.zeros(0)
    length = e - s
    width = int(length.max())
    if length.min() < 1 or width > 10:
        return None
    pos = np.arange(width)
    inside = pos < length[:, None]
    digits = buf[np.minimum(s[:, None] + pos, buf.size - 1)] - np.uint8(48)  # wraps: "-" = 253
    minus = (digits[:, 0] == 253) & (length > 1)
    ok = (digits <= 9) | ~inside
    ok[:, 0] |= minus
    if not ok.all():
        return None
    digits[~inside] = 0
    digits[minus, 0] = 0
    power = np.where(inside, length[:, None] - 1 - pos, 0)
    values = (digits * _POW10[power]).sum(axis=1).astype(np.float64)
    values[minus] *= -1
    return values


def _name_runs(buf: np.ndarray, body: bytes, s: np.ndarray, e: np.ndarray):
    """
    The first field of each row as runs of equal consecutive names (rows of one image are
    usually consecutive), so that one bytes object is made per run, not per row.

    Returns:
        names: (R,) bytes, the name of each run.
        name_ids: (K,) int64 run of each row.
    """
    n = s.size
    length = e - s
    width = int(length.max()) if n else 0
    if n and width <= 256:
        pos = np.arange(width)
        inside = pos < length[:, None]
        chars = np.where(inside, buf[np.minimum(s[:, None] + pos, buf.size - 1)], 0)
        if not (chars[inside] == 0).any():  # a NUL in a name would blur the padding
            change = np.ones(n, dtype=bool)
            change[1:] = (chars[1:] != chars[:-1]).any(axis=1)
            run_starts = np.flatnonzero(change)
            names = [body[a:b] for a, b in zip(s[run_starts].tolist(), e[run_starts].tolist())]
            return names, np.cumsum(change) - 1
    return [body[a:b] for a, b in zip(s.tolist(), e.tolist())], np.arange(n)


def _read_lines(path: str) -> bytes:
    """The file's bytes without a UTF-8 byte-order mark, with "\\n" line ends, the last one too."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def _numeric_columns(buf, body: bytes, starts, ends, columns, numeric):
    """
    The ``numeric`` columns parsed (integers on the raw bytes, else field by field), the rows
    with a field that is not a finite number, and the first such field of the first rows.
    """
    values = {}
    bad_any = np.zeros(len(starts), dtype=bool)
    details = {}
    for name in numeric:
        j = columns.index(name)
        v = _parse_int_fields(buf, starts[:, j], ends[:, j])
        if v is None:
            col = [body[a:b] for a, b in zip(starts[:, j].tolist(), ends[:, j].tolist())]
            v, bad = _parse_column(col)
            for i in np.flatnonzero(bad & ~bad_any)[:20].tolist():
                details[i] = f"{name} = {_show(col[i])}"
            bad_any |= bad
        values[name] = v
    return values, bad_any, details


def read_csv_columns(
    path: str, columns: Sequence[str], numeric: Sequence[str], report: InputReport
) -> Tuple[List[bytes], np.ndarray, Dict[str, np.ndarray], np.ndarray]:
    """
    Split a headerless-or-headed CSV into columns, reporting malformed rows.

    A first line equal to ``columns`` is a header and skipped; empty lines carry nothing and
    are skipped; every other row must have ``len(columns)`` fields, the ``numeric`` ones
    finite numbers, else it is reported ("wrong column count", "non-numeric field").
    Integer columns are parsed on the raw bytes with numpy; others field by field.

    Returns:
        names: (R,) image names as bytes (one per run of equal consecutive names).
        name_ids: (K,) index into names of each good row.
        values: column name -> (K,) float64.
        lines: (K,) 1-based line number of each good row.
    """
    data = _read_lines(path)
    k = len(columns)
    buf = np.frombuffer(data, np.uint8)
    seps, commas = _separators(buf)
    line_ends = seps[buf[seps] == 10]
    line_starts = np.concatenate([[0], line_ends[:-1] + 1])[: line_ends.size].astype(np.int64)
    good = line_ends > line_starts  # empty lines carry nothing
    if good.any():
        first = int(np.argmax(good))
        head = data[line_starts[first] : line_ends[first]].decode("utf-8", "replace")
        if [c.strip().lower() for c in head.split(",")] == list(columns):
            good[first] = False
    wrong = good & (commas != k - 1)
    if wrong.any():
        idx = np.flatnonzero(wrong)
        report.add(
            "wrong column count",
            path,
            idx + 1,
            [f"{commas[i] + 1} fields, expected {k}" for i in idx[:20]],
        )
        good &= ~wrong
    rows = np.flatnonzero(good)
    if rows.size == line_ends.size:
        body = data
    else:
        body = b"".join(
            data[a : b + 1] for a, b in zip(line_starts[rows].tolist(), line_ends[rows].tolist())
        )
        buf = np.frombuffer(body, np.uint8)
        seps, _ = _separators(buf)
    del data
    if rows.size:
        starts, ends = _fields(seps, k)
    else:
        starts = ends = np.zeros((0, k), dtype=np.int64)

    values, bad_any, details = _numeric_columns(buf, body, starts, ends, columns, numeric)
    names, name_ids = _name_runs(buf, body, starts[:, 0], ends[:, 0])
    line_numbers = rows + 1
    if bad_any.any():
        idx = np.flatnonzero(bad_any)
        report.add(
            "non-numeric field",
            path,
            line_numbers[idx],
            [details.get(i, "") for i in idx[:20].tolist()],
        )
        keep = ~bad_any
        name_ids = name_ids[keep]
        values = {c: v[keep] for c, v in values.items()}
        line_numbers = line_numbers[keep]
    return names, name_ids, values, line_numbers


def _group_images(
    names: List[bytes], name_ids: np.ndarray
) -> Tuple[List[str], np.ndarray, np.ndarray, np.ndarray]:
    """
    Returns:
        image_names: (M,) unique names, in order of first appearance.
        box_image: (K,) index of each row's image.
        first_row: (M,) row where each image first appears.
        image_ids: (M,) 1-based rank of each name in sorted order: stable between runs and
            independent of the row order.
    """
    # Runs are numbered in row order, so np.unique's sorted runs come in order of appearance.
    used, first_pos = np.unique(name_ids, return_index=True)
    image_of: Dict[bytes, int] = {}
    run_image = np.zeros(len(names), dtype=np.int64)
    first_row = []
    for r, p in zip(used.tolist(), first_pos.tolist()):
        i = image_of.setdefault(names[r], len(image_of))
        run_image[r] = i
        if i == len(first_row):
            first_row.append(p)
    image_names = [os.fsdecode(n) for n in image_of]
    order = sorted(range(len(image_names)), key=image_names.__getitem__)
    image_ids = np.empty(len(image_names), dtype=np.int64)
    image_ids[order] = np.arange(1, len(image_names) + 1)
    return image_names, run_image[name_ids], np.asarray(first_row, dtype=np.int64), image_ids


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Annotation file not found: {path} (see datasets/README.md for the expected tree)"
        )


def parse_sku110k_csv(path: str, report: InputReport) -> BoxTable:
    """
    Parse a SKU-110K annotation CSV. Rows whose image size is not positive are reported
    ("invalid image size"), as are rows recording a different size than the first row of
    the same image ("inconsistent image size").
    """
    _require_file(path)
    numeric = ("x1", "y1", "x2", "y2", "image_width", "image_height")
    names, name_ids, v, lines = read_csv_columns(path, SKU110K_COLUMNS, numeric, report)
    w, h = v["image_width"], v["image_height"]
    bad = (w < 1) | (h < 1) | (w != np.floor(w)) | (h != np.floor(h))
    if bad.any():
        idx = np.flatnonzero(bad)
        report.add(
            "invalid image size",
            path,
            lines[idx],
            [f"image_width={w[i]:g}, image_height={h[i]:g}" for i in idx[:20]],
        )
        keep = ~bad
        name_ids = name_ids[keep]
        v = {c: a[keep] for c, a in v.items()}
        lines = lines[keep]
        w, h = v["image_width"], v["image_height"]

    image_names, box_image, first_row, image_ids = _group_images(names, name_ids)
    image_hw = np.stack([h[first_row], w[first_row]], axis=1)
    hw_rows = image_hw[box_image]
    differs = (hw_rows[:, 0] != h) | (hw_rows[:, 1] != w)
    boxes = np.stack([v["x1"], v["y1"], v["x2"], v["y2"]], axis=1)
    table = BoxTable(
        sources=[path],
        unit="line",
        image_names=image_names,
        image_ids=image_ids,
        image_hw=image_hw,
        box_image=box_image,
        boxes=boxes,
        box_loc=lines,
        box_src=np.zeros(len(lines), dtype=np.int64),
    )
    if differs.any():
        idx = np.flatnonzero(differs)
        report.add(
            "inconsistent image size",
            path,
            lines[idx],
            [
                f"{image_names[box_image[i]]}: {w[i]:g}x{h[i]:g} here, "
                f"{hw_rows[i, 1]:g}x{hw_rows[i, 0]:g} on line {lines[first_row[box_image[i]]]}"
                for i in idx[:20]
            ],
        )
        table.select_boxes(~differs)
    return table


def parse_benchmark_csv(path: str, report: InputReport) -> BoxTable:
    """
    Parse a product-detection benchmark CSV. Image sizes are unknown (NaN) until
    :func:`clean_table` reads the image headers.
    """
    _require_file(path)
    names, name_ids, v, lines = read_csv_columns(
        path, BENCHMARK_COLUMNS, ("x1", "y1", "x2", "y2"), report
    )
    image_names, box_image, _, image_ids = _group_images(names, name_ids)
    return BoxTable(
        sources=[path],
        unit="line",
        image_names=image_names,
        image_ids=image_ids,
        image_hw=np.full((len(image_names), 2), np.nan),
        box_image=box_image,
        boxes=np.stack([v["x1"], v["y1"], v["x2"], v["y2"]], axis=1),
        box_loc=lines,
        box_src=np.zeros(len(lines), dtype=np.int64),
    )


def sniff_csv_format(path: str) -> str:
    """ "sku110k" or "benchmark" from the first non-empty line of a CSV."""
    _require_file(path)
    with open(path, "rb") as f:
        head = f.read(65536)
    for number, line in enumerate(head.lstrip(b"\xef\xbb\xbf").split(b"\n"), 1):
        if line.strip():
            fields = [c.strip().lower() for c in line.decode("utf-8", "replace").split(",")]
            if fields == list(SKU110K_COLUMNS) or (len(fields) == 8 and fields[0] != "image_name"):
                return "sku110k"
            if fields == list(BENCHMARK_COLUMNS) or len(fields) == 6:
                return "benchmark"
            raise AnnotationError(
                f"{path}, line {number}: cannot tell the CSV format: {len(fields)} fields; "
                "expected 8 "
                f"(SKU-110K: {','.join(SKU110K_COLUMNS)}) or 6 (benchmark, header "
                f"{','.join(BENCHMARK_COLUMNS)}). Pass fmt= explicitly."
            )
    raise AnnotationError(f"{path}: the annotation file is empty")


def read_box_csv(path: str) -> BoxTable:
    """
    The boxes of a CSV in the SKU-110K or the benchmark layout (told apart by
    :func:`sniff_csv_format`), as parsed for a dataset but without the image checks: for tools
    that draw or time boxes. A malformed row raises :class:`AnnotationError` naming the file,
    the line and the problem.
    """
    report = InputReport(os.path.basename(path), path)
    parse = parse_sku110k_csv if sniff_csv_format(path) == "sku110k" else parse_benchmark_csv
    table = parse(path, report)
    # Nothing is cleaned after parsing here: what the parser kept is what the caller gets.
    report.kept_images, report.kept_boxes = len(table.image_names), len(table.boxes)
    report.finish("error")
    return table
