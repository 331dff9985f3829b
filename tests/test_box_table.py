"""
The checks every annotation format shares (clean_table) and the conversion to dataset dicts,
on tables built by hand against a folder of small images: which rows each check drops, under
which reason and detail, what is clipped, and what is kept.
"""

import os

import numpy as np
import pytest
from detectron2.structures import BoxMode
from PIL import Image

from common import write_image
from gaussian_retina.shelves.bad_input import InputReport
from gaussian_retina.shelves.box_table import BoxTable, clean_table, table_to_dicts


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "images"
    write_image(root / "a.jpg", 60, 40)
    write_image(root / "b.jpg", 30, 50)
    write_image(root / "c.png", 32, 32)
    write_image(root / "sub" / "d.jpg", 10, 20)
    write_image(root / "e.jpg", 12, 6)
    write_image(root / "f.jpg", 8, 8)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "full.jpg", quality=95)
    data = (root / "full.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(data[: len(data) * 6 // 10])
    return root


def _table(names, hw, rows, sources=("ann.csv",), iscrowd=None, ids=None):
    """rows: (image index, [x1, y1, x2, y2]) each; the location of row i is line i + 1."""
    return BoxTable(
        sources=list(sources),
        unit="line",
        image_names=list(names),
        image_ids=np.arange(1, len(names) + 1) if ids is None else np.asarray(ids),
        image_hw=np.asarray(hw, dtype=np.float64).reshape(-1, 2),
        box_image=np.asarray([r[0] for r in rows], dtype=np.int64),
        boxes=np.asarray([r[1] for r in rows], dtype=np.float64).reshape(-1, 4),
        box_loc=np.arange(1, len(rows) + 1),
        box_src=np.zeros(len(rows), dtype=np.int64),
        iscrowd=None if iscrowd is None else np.asarray(iscrowd, dtype=np.int64),
    )


def _problems(report):
    return [(p.file, p.location, p.reason, p.detail) for p in report.problems()]


def test_each_check_drops_its_rows_in_order(root):
    nan = float("nan")
    names = ["a.jpg", "b.jpg", "zz.jpg", "c.png", "sub/d.jpg", "trunc.jpg", "e.jpg", "f.jpg"]
    hw = [[40, 60], [50, 31], [10, 10], [nan, nan], [20, 10], [nan, nan], [nan, nan], [8, 8]]
    rows = [
        (0, [1, 2, 10, 20]),  # 1 kept
        (0, [10, 2, 10, 20]),  # 2 no width
        (2, [1, 1, 2, 2]),  # 3 missing image
        (1, [1, 1, 5, 5]),  # 4 its image's size disagrees
        (2, [3, 3, 4, 4]),  # 5 missing image
        (3, [-5, 10, 10, 60]),  # 6 clipped to [0, 10, 10, 32]
        (3, [32, 0, 40, 10]),  # 7 outside: x1 at the right edge
        (0, [59.5, 0, 70, 10]),  # 8 0.5 px wide once clipped: degenerate
        (4, [0, 0, 10, 20]),  # 9 the whole image: kept as it is
        (5, [1, 1, 2, 2]),  # 10 unreadable image
        (0, [0, 0, 61, 41]),  # 11 clipped to the image
        (3, [0, 0, 1, 1]),  # 12 exactly the minimum size: kept
        (0, [1, 2, 3, 2]),  # 13 no height
        (4, [0, -5, 10, 0]),  # 14 outside: y2 at the top edge
        (7, [8, 0, 9, 5]),  # 15 outside; its image is left without boxes
        (0, [0, 39.5, 10, 50]),  # 16 0.5 px high once clipped: degenerate
    ]
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(names, hw, rows), str(root), report, apply_exif=True)
    assert _problems(report)[:4] == [
        ("ann.csv", "line 2", "x2 <= x1 or y2 <= y1", "box [10, 2, 10, 20]"),
        ("ann.csv", "line 13", "x2 <= x1 or y2 <= y1", "box [1, 2, 3, 2]"),
        ("ann.csv", "line 3", "image named but missing", f"'zz.jpg' not found in {root}"),
        ("ann.csv", "line 5", "image named but missing", f"'zz.jpg' not found in {root}"),
    ]
    unreadable = _problems(report)[4]
    assert unreadable[:3] == ("ann.csv", "line 10", "unreadable image")
    assert unreadable[3].startswith(f"{root / 'trunc.jpg'}: ")
    assert _problems(report)[5:] == [
        ("ann.csv", "line 4", "recorded size disagrees with the file",
         "b.jpg: file is 30x50 (WxH, EXIF applied), annotations say 31x50"),
        ("ann.csv", "line 7", "box outside the image", "box [32, 0, 40, 10] vs image 32x32"),
        ("ann.csv", "line 14", "box outside the image", "box [0, -5, 10, 0] vs image 10x20"),
        ("ann.csv", "line 15", "box outside the image", "box [8, 0, 9, 5] vs image 8x8"),
    ]
    assert dict(report.rows_dropped) == {
        "x2 <= x1 or y2 <= y1": 2, "image named but missing": 2, "unreadable image": 1,
        "recorded size disagrees with the file": 1, "box outside the image": 3}
    assert dict(report.images_dropped) == {
        "image named but missing": 1, "unreadable image": 1,
        "recorded size disagrees with the file": 1, "image left without boxes": 1}
    assert table.image_names == ["a.jpg", "c.png", "sub/d.jpg", "e.jpg"]
    assert table.image_ids.tolist() == [1, 4, 5, 7]
    assert table.image_hw.tolist() == [[40, 60], [32, 32], [20, 10], [6, 12]]
    assert table.box_loc.tolist() == [1, 6, 9, 11, 12]
    assert table.box_image.tolist() == [0, 1, 2, 0, 1]
    assert table.boxes.tolist() == [[1, 2, 10, 20], [0, 10, 10, 32], [0, 0, 10, 20],
                                    [0, 0, 60, 40], [0, 0, 1, 1]]
    assert (report.clipped, report.degenerate) == (2, 2)
    assert (report.kept_images, report.kept_boxes, report.background_images) == (4, 5, 1)


def test_boxes_at_each_edge_of_thewrite_image(root):
    # a.jpg is 60x40: a box touching an edge from outside has no overlap; one pixel in has.
    rows = [(0, [60, 0, 70, 10]), (0, [0, 40, 10, 50]), (0, [-10, 0, 0, 10]),
            (0, [0, -10, 10, 0]), (0, [59, 0, 70, 10]), (0, [0, 39, 10, 50]),
            (0, [-10, 0, 1, 10]), (0, [0, -10, 10, 1])]
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["a.jpg"], [[40, 60]], rows), str(root), report, apply_exif=True)
    assert [p.location for p in report.problems()] == ["line 1", "line 2", "line 3", "line 4"]
    assert table.boxes.tolist() == [[59, 0, 60, 10], [0, 39, 10, 40], [0, 0, 1, 10],
                                    [0, 0, 10, 1]]
    assert (report.clipped, report.degenerate) == (4, 0)


def test_minimum_box_size_is_a_parameter(root):
    rows = [(0, [0, 0, 2, 5]), (0, [0, 0, 3, 3]), (0, [0, 0, 1.5, 10])]
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["a.jpg"], [[40, 60]], rows), str(root), report,
                        apply_exif=True, min_box_size=3)
    assert table.box_loc.tolist() == [2]
    assert (report.clipped, report.degenerate) == (0, 2)
    assert report.problems() == []  # thin boxes are counted, not reported as malformed


def test_a_recorded_size_is_checked_only_when_asked(root):
    nan = float("nan")
    rows = [(0, [1, 1, 5, 5]), (1, [1, 1, 5, 5])]
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["a.jpg", "c.png"], [[41, 61], [nan, nan]], rows), str(root),
                        report, apply_exif=True, check_image_sizes=False)
    assert report.problems() == []
    assert table.image_hw.tolist() == [[41, 61], [32, 32]]  # recorded kept; unknown read


def test_a_recorded_size_is_compared_after_or_before_the_exif_rotation(root):
    write_image(root / "r.jpg", 60, 40, orientation=6)  # stored 60x40, shown 40x60
    rows = [(0, [1, 1, 5, 5])]
    for apply_exif, recorded, detail in [
        (True, [60, 40], None),
        (False, [40, 60], None),
        (False, [60, 40], "r.jpg: file is 60x40 (WxH, EXIF ignored), annotations say 40x60"),
        (True, [40, 60], "r.jpg: file is 40x60 (WxH, EXIF applied), annotations say 60x40"),
    ]:
        report = InputReport("t", "ann.csv")
        table = clean_table(_table(["r.jpg"], [recorded], rows), str(root), report,
                            apply_exif=apply_exif)
        assert [p.detail for p in report.problems()] == ([detail] if detail else [])
        assert table.num_images == (0 if detail else 1)
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["r.jpg"], [[np.nan, np.nan]], rows), str(root), report,
                        apply_exif=True)
    assert table.image_hw.tolist() == [[60, 40]]


def test_missing_images_grouped_per_image_with_the_file_of_each_row(root, tmp_path):
    names = ["a.jpg", "y.jpg", "x.jpg", "sub/d.jpg", "sub/none.jpg"]
    rows = [(2, [1, 1, 2, 2]), (1, [1, 1, 2, 2]), (0, [1, 1, 2, 2]), (2, [1, 1, 2, 2]),
            (1, [1, 1, 2, 2]), (3, [1, 1, 2, 2]), (4, [1, 1, 2, 2])]
    table = _table(names, [[40, 60], [9, 9], [9, 9], [20, 10], [9, 9]], rows,
                   sources=("one.txt", "two.txt"))
    table.box_src = np.asarray([0, 1, 0, 1, 1, 0, 0])
    report = InputReport("t", "labels")
    clean_table(table, str(root), report, apply_exif=True)
    assert _problems(report) == [
        ("two.txt", "line 2", "image named but missing", f"'y.jpg' not found in {root}"),
        ("two.txt", "line 5", "image named but missing", f"'y.jpg' not found in {root}"),
        ("one.txt", "line 1", "image named but missing", f"'x.jpg' not found in {root}"),
        ("two.txt", "line 4", "image named but missing", f"'x.jpg' not found in {root}"),
        ("one.txt", "line 7", "image named but missing",
         f"'sub/none.jpg' not found in {root}"),
    ]
    assert report.quoted()[0] == (
        f"two.txt, lines 2, 5 (2 rows): image named but missing ('y.jpg' not found in {root})")
    assert report.images_dropped["image named but missing"] == 3
    assert table.image_names == ["a.jpg", "sub/d.jpg"]
    assert table.box_loc.tolist() == [3, 6]
    assert table.box_src.tolist() == [0, 0]
    assert table.box_image.tolist() == [0, 1]


def test_an_image_root_that_does_not_exist(tmp_path):
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["a.jpg"], [[40, 60]], [(0, [1, 1, 2, 2])]),
                        str(tmp_path / "nothing"), report, apply_exif=True)
    assert [p.reason for p in report.problems()] == ["image named but missing"]
    assert table.num_images == 0 and table.num_boxes == 0


def test_crowd_flags_follow_their_boxes(root):
    rows = [(0, [1, 1, 5, 5]), (1, [1, 1, 2, 2]), (0, [5, 5, 1, 1]), (0, [2, 2, 9, 9])]
    table = _table(["a.jpg", "zz.jpg"], [[40, 60], [9, 9]], rows, iscrowd=[1, 0, 1, 0])
    clean_table(table, str(root), InputReport("t", "ann.csv"), apply_exif=True)
    assert table.box_loc.tolist() == [1, 4]
    assert table.iscrowd.tolist() == [1, 0]


def test_details_are_kept_for_the_first_twenty_boxes_of_a_reason(root):
    rows = [(0, [i, 1, i, 5]) for i in range(25)] + [(0, [70 + i, 1, 80 + i, 5]) for i in range(25)]
    report = InputReport("t", "ann.csv")
    clean_table(_table(["a.jpg"], [[40, 60]], rows), str(root), report, apply_exif=True)
    details = [p.detail for p in report.problems()]
    assert details[:25] == [f"box [{i}, 1, {i}, 5]" for i in range(20)] + [""] * 5
    assert details[25:] == [f"box [{70 + i}, 1, {80 + i}, 5] vs image 60x40"
                            for i in range(20)] + [""] * 5


def test_table_to_dicts_orders_images_by_id_and_groups_their_boxes(tmp_path):
    table = _table(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [[40, 60], [50.0, 30.0], [8, 9], [5, 5]],
                   [(2, [1, 2, 3, 4]), (0, [5, 6, 7, 8]), (2, [9, 10, 11, 12]),
                    (0, [1.5, 2.5, 3.5, 4.5])],
                   ids=[3, 1, 2, 7])
    dicts = table_to_dicts(table, "/root/dir", apply_exif=False)
    mode = BoxMode.XYXY_ABS
    assert dicts == [
        {"file_name": os.path.join("/root/dir", "b.jpg"), "image_id": 1, "height": 50,
         "width": 30, "apply_exif": False, "annotations": []},
        {"file_name": os.path.join("/root/dir", "c.jpg"), "image_id": 2, "height": 8,
         "width": 9, "apply_exif": False,
         "annotations": [{"bbox": [1, 2, 3, 4], "bbox_mode": mode, "category_id": 0},
                         {"bbox": [9, 10, 11, 12], "bbox_mode": mode, "category_id": 0}]},
        {"file_name": os.path.join("/root/dir", "a.jpg"), "image_id": 3, "height": 40,
         "width": 60, "apply_exif": False,
         "annotations": [{"bbox": [5, 6, 7, 8], "bbox_mode": mode, "category_id": 0},
                         {"bbox": [1.5, 2.5, 3.5, 4.5], "bbox_mode": mode, "category_id": 0}]},
        {"file_name": os.path.join("/root/dir", "d.jpg"), "image_id": 7, "height": 5,
         "width": 5, "apply_exif": False, "annotations": []},
    ]
    assert all(type(d["height"]) is int and type(d["width"]) is int for d in dicts)
    table.iscrowd = np.asarray([0, 1, 1, 0])
    dicts = table_to_dicts(table, "r", apply_exif=True)
    assert [d["apply_exif"] for d in dicts] == [True] * 4
    assert [[(a["bbox"], a["iscrowd"]) for a in d["annotations"]] for d in dicts] == [
        [],
        [([1, 2, 3, 4], 0), ([9, 10, 11, 12], 1)],
        [([5, 6, 7, 8], 1), ([1.5, 2.5, 3.5, 4.5], 0)],
        [],
    ]


def test_many_rows_keep_their_file_order_within_eachwrite_image(root):
    rng = np.random.default_rng(0)
    image_of_row = rng.integers(0, 7, size=600)
    rows = [(int(i), [1, 1, 2 + r % 7, 2 + r % 5]) for r, i in enumerate(image_of_row)]
    names = ["a.jpg", "x1.jpg", "c.png", "x2.jpg", "b.jpg", "x3.jpg", "e.jpg"]
    table = _table(names, np.full((7, 2), np.nan), rows)
    dicts = table_to_dicts(table, "r", apply_exif=True)
    for i, d in enumerate(dicts):
        expected = [rows[r][1] for r in np.flatnonzero(image_of_row == i)]
        assert [a["bbox"] for a in d["annotations"]] == expected
    report = InputReport("t", "ann.csv")
    clean_table(table, str(root), report, apply_exif=True)
    missing = [p for p in report.problems() if p.reason == "image named but missing"]
    expected = [f"line {r + 1}" for i in (1, 3, 5) for r in np.flatnonzero(image_of_row == i)]
    assert [p.location for p in missing] == expected
    assert table.image_names == ["a.jpg", "c.png", "b.jpg", "e.jpg"]


def test_table_to_dicts_leaves_the_garbage_collector_as_it_found_it():
    import gc

    table = _table(["a.jpg"], [[4, 4]], [(0, [0, 0, 1, 1])])
    assert gc.isenabled()
    table_to_dicts(table, "r", apply_exif=True)
    assert gc.isenabled()
    gc.disable()
    try:
        table_to_dicts(table, "r", apply_exif=True)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_crowd_flags_in_the_dicts_and_entry_locations_in_the_problems(root):
    table = _table(["a.jpg", "c.png"], [[40, 60], [32, 32]],
                   [(0, [1, 1, 5, 5]), (1, [3, 3, 1, 9]), (1, [2, 2, 4, 4])],
                   sources=("one.json", "two.json"), iscrowd=[1, 0, 0])
    table.unit = "annotation index"
    table.box_loc = np.asarray([7, 3, 12])
    table.box_src = np.asarray([0, 1, 0])
    report = InputReport("t", "coco")
    clean_table(table, str(root), report, apply_exif=False)
    assert _problems(report) == [
        ("two.json", "annotation index 3", "x2 <= x1 or y2 <= y1", "box [3, 3, 1, 9]")]
    mode = BoxMode.XYXY_ABS
    assert [d["annotations"] for d in table_to_dicts(table, "r", apply_exif=False)] == [
        [{"bbox": [1, 1, 5, 5], "bbox_mode": mode, "category_id": 0, "iscrowd": 1}],
        [{"bbox": [2, 2, 4, 4], "bbox_mode": mode, "category_id": 0, "iscrowd": 0}],
    ]


def test_an_empty_table_stays_empty(root):
    table = _table([], np.zeros((0, 2)), [])
    report = InputReport("t", "ann.csv")
    clean_table(table, str(root), report, apply_exif=True)
    assert table.num_images == 0 and table.num_boxes == 0 and report.problems() == []
    assert (report.kept_images, report.kept_boxes, report.background_images) == (0, 0, 0)
    assert table_to_dicts(table, "r", apply_exif=True) == []


def test_a_tall_image_clips_each_side_to_its_own_extent(root):
    # sub/d.jpg is 10 wide, 20 high.
    rows = [(0, [2, 15, 5, 18]), (0, [-3, 12, 15, 25]), (0, [8, -2, 12, 11])]
    report = InputReport("t", "ann.csv")
    table = clean_table(_table(["sub/d.jpg"], [[20, 10]], rows), str(root), report,
                        apply_exif=True)
    assert table.boxes.tolist() == [[2, 15, 5, 18], [0, 12, 10, 20], [8, 0, 10, 11]]
    assert report.clipped == 2


def test_an_image_in_a_subfolder_is_found(root):
    table = _table(["sub/d.jpg", "sub/none.jpg"], [[20, 10], [20, 10]], [(0, [1, 1, 5, 5]), (1, [1, 1, 5, 5])])
    report = InputReport("t", "ann.csv")
    table = clean_table(table, str(root), report, apply_exif=True)
    assert table.image_names == ["sub/d.jpg"]
    assert report.images_dropped == {"image named but missing": 1}


def test_a_box_ending_within_a_pixel_of_the_border_is_degenerate(root):
    # Clipped at x = 0 or y = 0, these boxes are under a pixel wide or tall: dropped, counted.
    rows = [(0, [-5, 2, 0.5, 20]), (0, [2, -5, 20, 0.5]), (0, [-5, 2, 1.5, 20])]
    table = _table(["a.jpg"], [[40, 60]], rows)
    report = InputReport("t", "ann.csv")
    table = clean_table(table, str(root), report, apply_exif=True)
    assert report.degenerate == 2 and report.clipped == 1
    assert table.boxes.tolist() == [[0, 2, 1.5, 20]]


def test_a_missing_image_is_named_in_the_tables_own_unit(root):
    table = _table(["gone.jpg"], [[40, 60]], [(0, [1, 1, 5, 5]), (0, [6, 6, 9, 9])], sources=("ann.json",))
    table.unit = "annotation id"
    table.box_loc = np.array([11, 12])
    report = InputReport("t", "ann.json")
    table = clean_table(table, str(root), report, apply_exif=True)
    (quoted,) = report.quoted()
    assert quoted == (
        f"ann.json, annotation ids 11-12 (2 rows): image named but missing ('gone.jpg' not found in {root})"
    )
