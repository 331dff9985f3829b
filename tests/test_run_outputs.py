"""
RunOutputs on its own: the files of a prediction run, exactly, from hand-made photo records; the
journal's recovery from a line cut short; and the settings a run may resume with.
"""

import json

import pytest

from gaussian_retina.inference.run_outputs import RunOutputs, SettingsMismatchError

SETTINGS = {"conf": 0.3, "tiling": "auto", "device": "cpu", "batch_size": 1}


def _photo(name, boxes, scores, count, classes=None, seconds=0.5):
    return {
        "name": name,
        "image_name": f"{name}.jpg",
        "file": f"/photos/{name}.jpg",
        "image_size": [40, 60],
        "boxes": boxes,
        "scores": scores,
        "classes": classes if classes is not None else [0] * len(scores),
        "count": count,
        "seconds": seconds,
    }


def _skipped(name):
    return {"name": name, "image_name": f"{name}.jpg", "file": f"/photos/{name}.jpg",
            "skipped": f"/photos/{name}.jpg: truncated JPEG"}


def _run(out, **kwargs):
    outputs = RunOutputs(out, SETTINGS, class_names=("pack", "carton"), **kwargs)
    outputs.add_photo(_photo("b", [[1.234, 2.0, 10.0, 20.0]], [0.912345],
                             {"detections": 1, "products": 2}, classes=[1], seconds=0.25))
    outputs.add_photo(_skipped("c"))
    outputs.add_photo(_photo("a", [[0.0, 0.0, 5.5, 6.0], [30.0, 10.0, 50.0, 30.0]], [0.8, 0.4],
                             {"detections": 2, "map_peaks": 3, "products": 3}))
    return outputs


def test_a_run_writes_each_file_in_the_photos_order(tmp_path):
    out = tmp_path / "out"
    outputs = _run(out)
    names = ["a", "b", "c"]
    summary = outputs.finish(names, {"weights": "w.pth"})

    assert (out / "detections" / "b.csv").read_text().splitlines() == [
        "b.jpg,1,2,10,20,carton,60,40,0.9123"
    ]
    assert (out / "detections.csv").read_text().splitlines() == [
        "a.jpg,0,0,6,6,pack,60,40,0.8000",
        "a.jpg,30,10,50,30,pack,60,40,0.4000",
        "b.jpg,1,2,10,20,carton,60,40,0.9123",
    ]
    # Every method any photo was counted by, "" where a photo was not.
    assert (out / "counts.csv").read_text().splitlines() == [
        "image_name,detections,map_peaks,products",
        "a.jpg,2,3,3",
        "b.jpg,1,,2",
    ]
    coco = json.loads((out / "coco_results.json").read_text())
    ids = {im["file_name"]: im["id"] for im in coco["images"]}
    assert set(ids) == {"a.jpg", "b.jpg"}
    assert sorted((a["image_id"], a["category_id"], a["score"]) for a in coco["annotations"]) == (
        sorted([(ids["a.jpg"], 1, 0.8), (ids["a.jpg"], 1, 0.4), (ids["b.jpg"], 2, 0.91234)])
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    photos = summary.pop("photos")
    assert summary == {
        "weights": "w.pth",
        "photos_total": 3,
        "photos_done": 2,
        "photos_skipped": 1,
        "skipped": [{"file": "/photos/c.jpg", "reason": "/photos/c.jpg: truncated JPEG"}],
        "products_total": 5,
        "seconds_total": 0.75,
        "seconds_per_photo": 0.375,
    }
    assert [p["name"] for p in photos] == ["a", "b"]
    assert all("boxes" not in p and "scores" not in p and "classes" not in p for p in photos)
    assert photos[1]["count"] == {"detections": 1, "products": 2}
    assert json.loads((out / "run.json").read_text()) == SETTINGS
    assert not list(out.rglob("*.tmp"))


def test_coco_results_are_rewritten_as_the_run_goes_at_most_so_often(tmp_path):
    often = _run(tmp_path / "often", coco_every_s=0.0)
    often.checkpoint(["a", "b", "c"], {})
    assert set(json.loads((tmp_path / "often" / "summary.json").read_text())) >= {"photos_done"}
    assert (tmp_path / "often" / "coco_results.json").is_file()
    rarely = _run(tmp_path / "rarely")  # every 60 s by default
    rarely.checkpoint(["a", "b", "c"], {})
    assert (tmp_path / "rarely" / "summary.json").is_file()
    assert not (tmp_path / "rarely" / "coco_results.json").exists()


@pytest.mark.parametrize("tail", [b'{"name": "d", "image', b'{"name": "d"}'])
def test_a_journal_line_cut_short_is_dropped_and_its_photo_redone(tmp_path, tail):
    out = tmp_path / "out"
    _run(out)
    journal = out / "photos.jsonl"
    whole = journal.read_bytes()
    journal.write_bytes(whole + tail)  # the stop came while this line was written
    again = RunOutputs(out, SETTINGS, class_names=("pack", "carton"))
    assert sorted(again.records) == ["a", "b", "c"] and not again.done("d")
    assert journal.read_bytes() == whole
    # Lines after a cut one are not read either: the journal ends at the cut.
    journal.write_bytes(whole.replace(b"\n", b"\nnot json\n", 1))
    again = RunOutputs(out, SETTINGS, class_names=("pack", "carton"))
    assert list(again.records) == ["b"]
    assert journal.read_bytes() == whole.split(b"\n")[0] + b"\n"


def test_a_run_resumes_only_with_the_settings_it_was_made_with(tmp_path):
    out = tmp_path / "out"
    _run(out)
    # The device, the batch size and the threads do not change what is predicted.
    RunOutputs(out, dict(SETTINGS, device="cuda:1", batch_size=4, num_threads=2))
    changed = dict(SETTINGS, conf=0.5, rescore_alpha=0.5)
    with pytest.raises(SettingsMismatchError) as e:
        RunOutputs(out, changed)
    assert str(e.value) == (
        f"{out} holds a run made with other settings (conf, rescore_alpha); rerun with those "
        "settings to resume it, or give another --output"
    )
    # A folder whose run did no photo yet holds nothing to mix: the new settings replace it.
    fresh = tmp_path / "fresh"
    RunOutputs(fresh, SETTINGS)
    RunOutputs(fresh, changed)
    assert json.loads((fresh / "run.json").read_text()) == changed


def test_files_as_the_run_goes_and_the_journals_rounding(tmp_path):
    out = tmp_path / "out"
    outputs = RunOutputs(out, SETTINGS, class_names=("pack", "carton"), coco_every_s=0.0)
    (out / "counts.csv").touch()  # left empty by a stop before the first row: still a header
    outputs.add_photo(_photo("aisle/shelf1/b", [[1.234, 2.0, 10.0, 20.0]], [0.912345],
                             {"detections": 1, "products": 2}, classes=[1], seconds=0.1234))
    first = _photo("shelf2/a", [[0.0, 0.0, 5.5, 6.0]], [0.8], {"detections": 1})
    del first["seconds"]  # neither a time nor a product count: both count as 0
    outputs.add_photo(first)
    # Before the run ends: each photo's CSV in its own folder, and the run's files growing.
    assert (out / "detections" / "aisle" / "shelf1" / "b.csv").is_file()
    assert (out / "detections.csv").read_text().splitlines() == [
        "aisle/shelf1/b.jpg,1,2,10,20,carton,60,40,0.9123",
        "shelf2/a.jpg,0,0,6,6,pack,60,40,0.8000",
    ]
    assert (out / "counts.csv").read_text().splitlines() == [
        "image_name,detections,products",
        "aisle/shelf1/b.jpg,1,2",
        "shelf2/a.jpg,1",
    ]
    # The journal keeps boxes to the hundredth of a pixel and scores to five decimals.
    assert outputs.records["aisle/shelf1/b"]["boxes"] == [[1.23, 2.0, 10.0, 20.0]]
    assert outputs.records["aisle/shelf1/b"]["scores"] == [0.91234]
    for _ in range(2):
        outputs.checkpoint(["aisle/shelf1/b", "shelf2/a"], {})
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["products_total"], summary["seconds_total"]) == (2, 0.12)
    assert summary["seconds_per_photo"] == 0.062
    one = RunOutputs(tmp_path / "one", SETTINGS)
    one.add_photo(_photo("c", [[0.0, 0.0, 5.0, 5.0]], [0.5], {"products": 1}, seconds=0.1234))
    assert one.finish(["c"], {})["seconds_per_photo"] == 0.123
