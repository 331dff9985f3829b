"""
The COCO json and YOLO label parsers on their own: the table each gives (ids, sizes, boxes in
absolute XYXY, locations) and the problem each malformed entry is reported as; and the YOLO
writer's rows and files.
"""

import json
import os

import numpy as np
import pytest

from common import write_image
from gaussian_retina.shelves.bad_input import AnnotationError, InputReport
from gaussian_retina.shelves.coco_yolo import (
    parse_coco_json,
    parse_yolo_labels,
    write_yolo_split,
    yolo_label_rows,
)


def _report(path):
    return InputReport("test", str(path))


def _coco(tmp_path, data):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    report = _report(path)
    return parse_coco_json(str(path), report), report, str(path)


def _problems(report):
    return [(p.location, p.reason, p.detail) for p in report.problems()]


def test_coco_boxes_ids_sizes_and_crowd_flags(tmp_path):
    data = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "height": 40, "width": 60},
            {"id": 3, "file_name": "sub/b.jpg"},
            {"id": 0, "file_name": "c.jpg", "height": 1, "width": 2.5},
        ],
        "annotations": [
            {"id": 10, "image_id": 3, "bbox": [1, 2, 9, 18], "iscrowd": 1},
            {"id": 11, "image_id": 7, "bbox": [0.5, 1.5, 2, 0.25]},
            {"id": 12, "image_id": 0, "bbox": [-1, -2, 3, 4], "iscrowd": 0},
            {"id": 13, "image_id": 7, "bbox": [5, 5, 1, 1], "iscrowd": True},
        ],
    }
    table, report, path = _coco(tmp_path, data)
    assert report.problems() == []
    assert table.image_names == ["a.jpg", "sub/b.jpg", "c.jpg"]
    assert table.image_ids.tolist() == [7, 3, 0]
    assert table.image_ids.dtype == np.int64
    hw = table.image_hw
    assert hw.shape == (3, 2)
    assert hw[0].tolist() == [40, 60] and np.isnan(hw[1]).all() and hw[2].tolist() == [1, 2.5]
    assert table.box_image.tolist() == [1, 0, 2, 0]
    assert table.boxes.tolist() == [[1, 2, 10, 20], [0.5, 1.5, 2.5, 1.75], [-1, -2, 2, 2],
                                    [5, 5, 6, 6]]
    assert table.box_loc.tolist() == [0, 1, 2, 3]
    assert table.box_src.tolist() == [0, 0, 0, 0]
    assert table.iscrowd.tolist() == [1, 0, 0, 1]
    assert table.sources == [path] and table.unit == "annotation index"
    _assert_dtypes(table)


def test_coco_without_annotations_or_images(tmp_path):
    table, report, _ = _coco(tmp_path, {"images": [{"id": 1, "file_name": "a.jpg"}]})
    assert report.problems() == []
    assert table.image_names == ["a.jpg"] and table.boxes.shape == (0, 4)
    assert table.box_image.tolist() == [] and table.iscrowd.tolist() == []
    table, report, _ = _coco(tmp_path, {"images": [], "annotations": []})
    assert table.image_names == [] and table.image_hw.shape == (0, 2)
    assert table.boxes.shape == (0, 4)
    _assert_dtypes(table)
    table, _, _ = _coco(tmp_path, {"images": [{"id": 2, "file_name": "a.jpg", "height": 4,
                                               "width": 6}]})
    assert table.image_hw.tolist() == [[4, 6]]
    _assert_dtypes(table)


def _assert_dtypes(table):
    """The columns' types as BoxTable documents them, whatever the json holds."""
    assert table.image_ids.dtype == np.int64 and table.image_hw.dtype == np.float64
    assert table.box_image.dtype == np.int64 and table.boxes.dtype == np.float64
    assert table.box_loc.dtype == np.int64 and table.box_src.dtype == np.int64
    if table.iscrowd is not None:
        assert table.iscrowd.dtype == np.int64


def test_coco_malformed_image_entries(tmp_path):
    images = [
        {"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
        "a.jpg",
        {"id": "2", "file_name": "b.jpg"},
        {"id": True, "file_name": "b.jpg"},
        {"id": 3, "file_name": ""},
        {"id": 4, "file_name": 5},
        {"id": 1, "file_name": "again.jpg"},
        {"id": 5, "file_name": "c.jpg", "height": 40},
        {"id": 6, "file_name": "c.jpg", "height": 0, "width": 60},
        {"id": 7, "file_name": "c.jpg", "height": 40, "width": 0.5},
        {"id": 8, "file_name": "c.jpg", "height": True, "width": 60},
        {"id": 9, "file_name": "c.jpg", "height": 40, "width": float("inf")},
        {"id": 10, "file_name": "c.jpg", "height": "40", "width": 60},
        {"id": 11, "file_name": "d.jpg", "height": 1, "width": 1},
        ["x" * 50],
    ]
    text = json.dumps({"images": images}).replace("Infinity", "1e999")
    table, report, _ = _coco(tmp_path, text)
    assert table.image_names == ["a.jpg", "d.jpg"]
    assert table.image_ids.tolist() == [1, 11]
    assert table.image_hw.tolist() == [[40, 60], [1, 1]]
    r = "malformed image entry"
    assert _problems(report) == [
        ("images index 1", r, "not an object: a.jpg"),
        ("images index 2", r, "id '2' is not an integer"),
        ("images index 3", r, "id True is not an integer"),
        ("images index 4", r, "file_name '' is not a file name"),
        ("images index 5", r, "file_name 5 is not a file name"),
        ("images index 6", r, "duplicate image id 1"),
        ("images index 7", r, "height/width 40/None are not positive numbers"),
        ("images index 8", r, "height/width 0/60 are not positive numbers"),
        ("images index 9", r, "height/width 40/0.5 are not positive numbers"),
        ("images index 10", r, "height/width True/60 are not positive numbers"),
        ("images index 11", r, "height/width 40/inf are not positive numbers"),
        ("images index 12", r, "height/width '40'/60 are not positive numbers"),
        ("images index 14", r, "not an object: ['" + "x" * 38),
    ]


def test_coco_malformed_annotations(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 1, "bbox": [1, 2, 3, 4]},
            {"image_id": 99, "bbox": [1, 2, 3, 4]},
            {"image_id": True, "bbox": [1, 2, 3, 4]},
            {"image_id": "1", "bbox": [1, 2, 3, 4]},
            {"bbox": [1, 2, 3, 4]},
            [1, 2],
            {"image_id": 2, "bbox": [1, 2, 3]},
            {"image_id": 2, "bbox": [1, 2, 3, "4"]},
            {"image_id": 2, "bbox": [1, 2, 3, True]},
            {"image_id": 2, "bbox": "1,2,3,4"},
            {"image_id": 2},
            {"image_id": 2, "bbox": [1, 2, 3, 4, 5]},
            {"image_id": 2, "bbox": [5, 6, 7, 8]},
        ],
    }
    text = json.dumps(data)
    table, report, _ = _coco(tmp_path, text)
    assert table.box_image.tolist() == [0, 1]
    assert table.boxes.tolist() == [[1, 2, 4, 6], [5, 6, 12, 14]]
    assert table.box_loc.tolist() == [0, 12]
    u, m = "unknown image id", "malformed bbox"
    assert _problems(report) == [
        ("annotation index 1", u, "image_id 99"),
        ("annotation index 2", u, "image_id True"),
        ("annotation index 3", u, "image_id 1"),
        ("annotation index 4", u, "image_id None"),
        ("annotation index 5", u, "image_id [1, 2]"),
        ("annotation index 6", m, "bbox [1, 2, 3], expected [x, y, w, h]"),
        ("annotation index 7", m, "bbox [1, 2, 3, '4'], expected [x, y, w, h]"),
        ("annotation index 8", m, "bbox [1, 2, 3, True], expected [x, y, w, h]"),
        ("annotation index 9", m, "bbox 1,2,3,4, expected [x, y, w, h]"),
        ("annotation index 10", m, "bbox None, expected [x, y, w, h]"),
        ("annotation index 11", m, "bbox [1, 2, 3, 4, 5], expected [x, y, w, h]"),
    ]


def test_coco_long_values_are_cut_in_the_details(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"image_id": "y" * 50, "bbox": [1, 2, 3, 4]},
                        {"image_id": 1, "bbox": ["z" * 70, 1, 1, 1]}],
    }
    _, report, _ = _coco(tmp_path, data)
    assert [p.detail for p in report.problems()] == [
        "image_id " + "y" * 40,
        "bbox " + ("['" + "z" * 70)[:60] + ", expected [x, y, w, h]",
    ]


def test_coco_json_with_a_byte_order_mark_or_in_utf16(tmp_path):
    text = json.dumps({"images": [{"id": 4, "file_name": "caf\u00e9.jpg"}],
                       "annotations": [{"image_id": 4, "bbox": [1, 2, 3, 4]}]})
    for name, data in (("bom.json", b"\xef\xbb\xbf" + text.encode()),
                       ("utf16.json", text.encode("utf-16"))):
        path = tmp_path / name
        path.write_bytes(data)
        table = parse_coco_json(str(path), _report(path))
        assert table.image_names == ["caf\u00e9.jpg"]
        assert table.boxes.tolist() == [[1, 2, 4, 6]]


def test_coco_files_that_are_not_coco(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^Annotation file not found: .*nope\.json$"):
        parse_coco_json(str(tmp_path / "nope.json"), _report(tmp_path))
    cases = [
        ('{"images": [\n  {"id": 1,}\n]}',
         r"instances\.json, line 2 column 12: not valid JSON "
         r"\(Expecting property name enclosed in double quotes\)$"),
        ('[{"images": []}]', r"instances\.json: not a COCO detection json \(no 'images' list\)$"),
        ('{"images": {}}', r"not a COCO detection json \(no 'images' list\)$"),
        ('{"annotations": []}', r"not a COCO detection json"),
        ('{"images": [], "annotations": {}}', r"instances\.json: 'annotations' is not a list$"),
    ]
    for text, message in cases:
        with pytest.raises(AnnotationError, match=message):
            _coco(tmp_path, text)
    path = tmp_path / "latin1.json"
    path.write_bytes('{"images": [{"id": 1, "file_name": "\xe9.jpg"}]}'.encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"latin1\.json: not UTF-8 JSON text \("):
        parse_coco_json(str(path), _report(path))


# ---------------------------------------------------------------------------- YOLO


def _folders(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_image(images / "a.jpg", 60, 40)
    write_image(images / "b.PNG", 30, 50)
    write_image(images / "sub" / "c.jpeg", 20, 10)
    write_image(images / "d.jpg", 8, 4)
    (images / "notes.txt").write_text("not an image")
    labels.mkdir()
    return images, labels


def test_yolo_boxes_are_scaled_to_eachwrite_image(tmp_path):
    images, labels = _folders(tmp_path)
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.25\n\n  \n3 0.25 0.75 0.5 0.5\n")
    (labels / "b.txt").write_text("1 0.5 0.5 1 1")  # no final newline
    (labels / "sub").mkdir()
    (labels / "sub" / "c.txt").write_text("0 .1 .2 .2 .4\n")
    (labels / "d.txt").write_text("\n \n")  # nothing in it: a background image
    (labels / "classes.txt").write_text("object\n")
    report = _report(labels)
    table = parse_yolo_labels(str(labels), str(images), report)
    assert report.problems() == []
    assert table.image_names == ["a.jpg", "b.PNG", "d.jpg", "sub/c.jpeg"]
    assert table.image_ids.tolist() == [1, 2, 3, 4]
    assert table.image_hw[:2].tolist() == [[40, 60], [50, 30]]
    assert np.isnan(table.image_hw[2]).all()  # not read: no boxes to scale
    assert table.image_hw[3].tolist() == [10, 20]
    assert table.box_image.tolist() == [0, 0, 1, 3]
    np.testing.assert_allclose(
        table.boxes,
        [[15, 15, 45, 25], [0, 20, 30, 40], [0, 0, 30, 50], [0, 0, 4, 4]], atol=1e-12)
    assert table.box_loc.tolist() == [1, 4, 1, 1]
    assert table.sources == [str(labels / "a.txt"), str(labels / "b.txt"),
                             str(labels / "sub" / "c.txt")]
    assert table.box_src.tolist() == [0, 0, 1, 2]
    assert table.unit == "line"
    _assert_dtypes(table)


def test_yolo_sizes_follow_the_exif_orientation_unless_told_not_to(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_image(images / "r.jpg", 60, 40, orientation=6)  # stored 60 wide, shown 40 wide
    labels.mkdir()
    (labels / "r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    table = parse_yolo_labels(str(labels), str(images), _report(labels))
    assert table.image_hw.tolist() == [[60, 40]]
    assert table.boxes.tolist() == [[10, 15, 30, 45]]
    table = parse_yolo_labels(str(labels), str(images), _report(labels), apply_exif=False)
    assert table.image_hw.tolist() == [[40, 60]]
    assert table.boxes.tolist() == [[15, 10, 45, 30]]


def test_yolo_without_any_label_file(tmp_path):
    images, labels = _folders(tmp_path)
    (labels / "classes.txt").write_text("object\n")
    table = parse_yolo_labels(str(labels), str(images), _report(labels))
    assert table.sources == [str(labels)]
    assert table.image_names == ["a.jpg", "b.PNG", "d.jpg", "sub/c.jpeg"]
    assert table.boxes.shape == (0, 4) and table.box_image.tolist() == []
    assert np.isnan(table.image_hw).all()
    _assert_dtypes(table)


def test_yolo_malformed_rows_missing_and_unreadable_images(tmp_path):
    images, labels = _folders(tmp_path)
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    (labels / "a.txt").write_text(
        "0 0.5 0.5 0.5 0.25\n"
        "0 0.5 0.5 0.5\n"
        "0 0.5 0.5 0.5 0.25 9\n"
        "0 0.5 nan 0.5 0.25\n"
        "0 0.5 0x1 0.5 0.25\n"
        "0 0.5 1e999 0.5 0.25\n"
        + "0 0.5 0.5 0.5 " + "7" * 80 + "x\n"
        "1 0.25 0.25 0.5 0.5\n")
    with open(labels / "a.txt", "ab") as f:
        f.write(b"0 0.5 \xff 0.5 0.25\n")
    (labels / "zz.txt").write_text("\n0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n")
    (labels / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n")
    (labels / "sub").mkdir()
    (labels / "sub" / "classes.txt").write_text("0 0.5 0.5 0.5 0.5\n")  # a label file here
    report = _report(labels)
    table = parse_yolo_labels(str(labels), str(images), report)
    assert table.box_image.tolist() == [0, 0]
    assert table.boxes.tolist() == [[15, 15, 45, 25], [0, 0, 30, 20]]
    assert table.box_loc.tolist() == [1, 8]
    assert table.sources == [str(labels / f) for f in ("a.txt", "broken.txt", "sub/classes.txt",
                                                       "zz.txt")]
    assert table.box_src.tolist() == [0, 0]
    a, zz = str(labels / "a.txt"), str(labels / "zz.txt")
    problems = [(p.file, p.location, p.reason, p.detail) for p in report.problems()]
    assert problems[:7] == [
        (a, "line 2", "wrong column count", "4 fields, expected 5 (class cx cy w h)"),
        (a, "line 3", "wrong column count", "6 fields, expected 5 (class cx cy w h)"),
        (a, "line 4", "non-numeric field", "0 0.5 nan 0.5 0.25"),
        (a, "line 5", "non-numeric field", "0 0.5 0x1 0.5 0.25"),
        (a, "line 6", "non-numeric field", "0 0.5 1e999 0.5 0.25"),
        (a, "line 7", "non-numeric field", ("0 0.5 0.5 0.5 " + "7" * 80)[:60]),
        (a, "line 9", "non-numeric field", "0 0.5 \\xff 0.5 0.25"),
    ]
    broken = str(labels / "broken.txt")
    assert [p[:3] for p in problems[7:9]] == [(broken, "line 1", "unreadable image"),
                                             (broken, "line 2", "unreadable image")]
    message = problems[7][3]
    assert message.startswith(f"{images / 'broken.jpg'}: not a readable image")
    assert problems[8][3] == message
    assert f"{broken}, lines 1-2 (2 rows): unreadable image ({message})" in report.quoted()
    missing = f"no image sub/classes.* in {images}"
    assert problems[9] == (str(labels / "sub" / "classes.txt"), "line 1",
                           "image named but missing", missing)
    assert problems[10:] == [
        (zz, "line 2", "image named but missing", f"no image zz.* in {images}"),
        (zz, "line 3", "image named but missing", f"no image zz.* in {images}"),
    ]
    assert report.quoted()[-1] == (
        f"{zz}, lines 2-3 (2 rows): image named but missing (no image zz.* in {images})")


def test_yolo_image_folder_absent_or_label_folder_absent(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    report = _report(labels)
    table = parse_yolo_labels(str(labels), str(tmp_path / "no_images"), report)
    assert table.image_names == [] and table.boxes.shape == (0, 4)
    _assert_dtypes(table)
    assert [(p.location, p.reason) for p in report.problems()] == [
        ("line 1", "image named but missing")]
    with pytest.raises(FileNotFoundError, match=r"^YOLO label folder not found: .*nope$"):
        parse_yolo_labels(str(tmp_path / "nope"), str(tmp_path), _report(labels))


def _record(boxes, h=40, w=60, **extra):
    annotations = [{"bbox": b, "bbox_mode": 0, "category_id": 0, **k} for b, k in boxes]
    return {"file_name": "a.jpg", "height": h, "width": w, "annotations": annotations, **extra}


def test_yolo_rows_clip_to_the_image_and_leave_out_crowds_and_empty_boxes():
    record = _record([
        ([0, 0, 10, 10], {"iscrowd": 1}),  # a crowd box first: left out, the rest still written
        ([-5, 0, 0.5, 10], {}),  # ends half a pixel into the image: a sliver at the left edge
        ([0, -5, 10, 0.5], {}),  # the same at the top
        ([10, 0, 10, 10], {}),  # no width
        ([20, 30, 30, 30], {}),  # no height
        ([59.5, 39.5, 70, 50], {}),  # half a pixel in from the bottom-right corner
    ])
    assert yolo_label_rows(record) == [
        "0 0.004167 0.125000 0.008333 0.250000",
        "0 0.083333 0.006250 0.166667 0.012500",
        "0 0.995833 0.993750 0.008333 0.012500",
    ]
    assert yolo_label_rows({"file_name": "b.jpg", "height": 40, "width": 60}) == []


def test_yolo_split_refuses_rotated_photos_whose_boxes_fit_raw_pixels(tmp_path):
    turned, plain = tmp_path / "turned.jpg", tmp_path / "plain.jpg"
    write_image(turned, 60, 40, orientation=6)
    write_image(plain, 60, 40)
    box = [([1, 2, 10, 20], {})]
    raw = _record(box, file_name=str(turned), apply_exif=False)
    with pytest.raises(ValueError, match=f"^{turned}: EXIF-rotated image; boxes fit raw pixels$"):
        write_yolo_split([raw], tmp_path / "yolo", "train")
    # Boxes that fit the rotated view, or a photo without a rotation, are written.
    ok = [_record(box, file_name=str(turned)), _record(box, file_name=str(turned), apply_exif=True),
          _record(box, file_name=str(plain), apply_exif=False)]
    for k, record in enumerate(ok):
        assert write_yolo_split([record], tmp_path / f"yolo{k}", "train") == (1, 1)


def test_yolo_split_points_an_old_link_at_the_new_photo(tmp_path):
    first, second = tmp_path / "one" / "a.jpg", tmp_path / "two" / "a.jpg"
    write_image(first, 60, 40)
    write_image(second, 60, 40)
    root = tmp_path / "yolo"
    write_yolo_split([_record([([1, 2, 10, 20], {})], file_name=str(first))], root, "train")
    write_yolo_split([_record([([1, 2, 10, 20], {})], file_name=str(second))], root, "train")
    assert os.readlink(root / "images" / "train" / "a.jpg") == str(second)
    assert sorted(os.listdir(root / "labels" / "train")) == ["a.txt"]
