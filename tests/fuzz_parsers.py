#!/usr/bin/env python
"""
Fuzz the retail annotation parsers with random corruptions of real annotation files.

Seeds (from ../shared/data, read-only; derived files go to a temporary folder):
  sku110k    tobacco_shelves/annotations.csv against tobacco_shelves/images
  benchmark  tobacco_shelves/exif_stale/annotations_raw_pixels.csv against its images
  coco       a COCO json converted from the sku110k seed
  yolo       a YOLO label folder converted from the sku110k seed

Each corrupted file is loaded under both policies, with its format named and detected.
Allowed outcomes: a dataset, or AnnotationError / FileNotFoundError whose message names the
file. Anything else is a crash (kept under --keep for reproduction). For every loaded
dataset the accounting must close: data rows = kept boxes + dropped rows + degenerate
boxes, so that nothing is lost silently; and under policy "error" a load that returns must
have dropped no row.

    python tests/fuzz_parsers.py --files 1000 [--seed 0] [--keep DIR]

It lives beside the tests, which run a short version of it (tests/test_datasets_fuzz.py).
"""

import argparse
import collections
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import traceback

import numpy as np

from gaussian_retina.shelves.bad_input import AnnotationError
from gaussian_retina.shelves.box_table import table_to_dicts
from gaussian_retina.shelves.register import (
    RetailDatasetSpec,
    load_retail_table,
)
from gaussian_retina.shelves.retail_csv import (
    BENCHMARK_COLUMNS,
    SKU110K_COLUMNS,
    read_box_csv,
)

SHARED_DATA = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared",
    "data",
)

TOKENS = [
    b"",
    b"nan",
    b"inf",
    b"-1",
    b"-0",
    b"1e999",
    b"abc",
    b"0x1F",
    "１２".encode(),
    b"\0",
    b"99999999999999999999",
    b"1_000",
    b'"12"',
    b" 12 ",
    b"1.5.5",
    b"+",
    b"-",
    b"e5",
    b"1e-400",
    b"object",
    b",",
    b"\r",
    b"\t",
    b"\xff\xfe",
    b"{",
    b"]",
    b"null",
    b"true",
]


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One random corruption, byte-level or line-level."""
    op = rng.randrange(12)
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    if op == 0 and data:  # flip bytes
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == 1:  # insert random bytes
        p = rng.randrange(len(data) + 1)
        return data[:p] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[p:]
    if op == 2 and data:  # delete a range
        p = rng.randrange(len(data))
        return data[:p] + data[p + rng.randint(1, 64) :]
    if op == 3:  # truncate
        return data[: rng.randrange(len(data) + 1)]
    if op == 4:  # duplicate or delete a line
        if rng.random() < 0.5:
            lines.insert(i, lines[i])
        else:
            del lines[i]
        return b"\n".join(lines)
    if op in (5, 6):  # replace a field by a nasty token
        sep = b"," if b"," in lines[i] else b" "
        fields = lines[i].split(sep)
        fields[rng.randrange(len(fields))] = rng.choice(TOKENS)
        lines[i] = sep.join(fields)
        return b"\n".join(lines)
    if op == 7:  # swap two fields (x1 <-> x2 makes x2 <= x1)
        sep = b"," if b"," in lines[i] else b" "
        fields = lines[i].split(sep)
        a, b = rng.randrange(len(fields)), rng.randrange(len(fields))
        fields[a], fields[b] = fields[b], fields[a]
        lines[i] = sep.join(fields)
        return b"\n".join(lines)
    if op == 8:  # numbers way off: negative, huge, beyond the image
        sep = b"," if b"," in lines[i] else b" "
        fields = lines[i].split(sep)
        j = rng.randrange(len(fields))
        fields[j] = str(rng.choice([-1, 1]) * rng.choice([1, 10, 1e4, 1e9, 0.5])).encode()
        lines[i] = sep.join(fields)
        return b"\n".join(lines)
    if op == 9:  # line endings, BOM, blank lines
        return rng.choice(
            [
                data.replace(b"\n", b"\r\n"),
                b"\xef\xbb\xbf" + data,
                data.replace(b"\n", b"\n\n"),
                data.replace(b"\n", b"\r"),
            ]
        )
    if op == 10:  # shuffle lines
        rng.shuffle(lines)
        return b"\n".join(lines)
    return b""  # empty file


def _mutate_json(data: bytes, rng: random.Random) -> bytes:
    """Structural corruptions of a COCO json, else a byte-level one."""
    try:
        coco = json.loads(data)
    except ValueError:
        coco = None
    if (
        rng.random() < 0.5
        or not isinstance(coco, dict)
        or not all(isinstance(coco.get(k), list) for k in ("images", "annotations"))
    ):
        return _mutate_bytes(data, rng)
    nasty = [None, "x", -5, 0, 1e308, [], {}, [1, 2], [1, 2, 3, "4"], True, float("nan")]
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(["images", "annotations"])
        items = coco[key]
        if not items:
            continue
        k = rng.randrange(len(items))
        r = rng.random()
        if r < 0.15:
            del items[k]
        elif r < 0.25:
            items[k] = rng.choice(nasty)
        elif isinstance(items[k], dict) and items[k]:
            field = rng.choice(list(items[k]))
            items[k][field] = rng.choice(nasty + [rng.randint(-10, 10**6)])
    if rng.random() < 0.05:
        coco = rng.choice([[], {"images": {}}, {"annotations": []}, None])
    return json.dumps(coco).encode()


def _write_seeds(work):
    """Real seed files; returns {format: (annotations path, image root, label folder?)}."""
    tob = os.path.join(SHARED_DATA, "tobacco_shelves")
    images = os.path.join(tob, "images")
    seeds = {
        "sku110k": (os.path.join(tob, "annotations.csv"), images),
        "benchmark": (
            os.path.join(tob, "exif_stale", "annotations_raw_pixels.csv"),
            os.path.join(tob, "exif_stale", "images"),
        ),
    }
    table = read_box_csv(seeds["sku110k"][0])
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    labels = os.path.join(work, "seed_labels")
    os.makedirs(labels)
    for i in np.argsort(table.image_names).tolist():
        n = table.image_names[i]
        h, w = (int(v) for v in table.image_hw[i])
        coco["images"].append({"id": i + 1, "file_name": n, "height": h, "width": w})
        yolo = []
        for x1, y1, x2, y2 in table.boxes[table.box_image == i].tolist():
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": i + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "category_id": 1,
                }
            )
            yolo.append(
                f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        with open(os.path.join(labels, os.path.splitext(n)[0] + ".txt"), "w") as f:
            f.write("\n".join(yolo) + "\n")
    coco_path = os.path.join(work, "seed.json")
    with open(coco_path, "w") as f:
        json.dump(coco, f)
    seeds["coco"] = (coco_path, images)
    seeds["yolo"] = (labels, images)
    return seeds


def _data_rows(fmt, path, columns=None):
    """How many rows a parser must account for (kept + dropped + degenerate)."""
    if fmt == "coco":
        try:
            with open(path, "rb") as f:
                coco = json.load(f)
            return len(coco["annotations"]) + sum(
                1
                for im in coco["images"]
                if not (
                    isinstance(im, dict)
                    and isinstance(im.get("id"), int)
                    and not isinstance(im.get("id"), bool)
                )
                or not isinstance(im.get("file_name"), str)
                or not im["file_name"]
            )
        except Exception:
            return None  # the images check is approximate; accounting skipped for COCO
    if fmt == "yolo":
        n = 0
        for f in os.listdir(path):
            if f.endswith(".txt") and f != "classes.txt":
                n += sum(
                    1
                    for line in open(os.path.join(path, f), "rb").read().split(b"\n")
                    if line.strip()
                )
        return n
    data = open(path, "rb").read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = [line for line in data.replace(b"\r\n", b"\n").split(b"\n") if line]
    if lines and [
        c.strip().lower() for c in lines[0].decode("utf-8", "replace").split(",")
    ] == list(columns):
        lines = lines[1:]
    return len(lines)


def _load_once(spec, fmt, policy, expected, crashes, leaks, keep):
    """
    Loads ``spec`` under ``policy`` as DatasetCatalog.get would; appends what went wrong to
    ``crashes`` (anything but a clear error naming the file) and ``leaks`` (rows unaccounted for).
    Returns the outcome: "loaded", the clear error's type name, or "CRASH".
    """
    path, named, image_root = spec.annotations, spec.fmt, spec.image_root
    try:
        table, report, exif = load_retail_table(spec, policy)
        dicts = table_to_dicts(table, image_root, apply_exif=exif)
        boxes = np.array([a["bbox"] for d in dicts for a in d["annotations"]])
        assert boxes.size == 0 or np.isfinite(boxes).all()
        if policy == "error" and report.num_problems:
            leaks.append(f"{path} ({named}, error): returned with problems")
        if named == fmt and fmt != "coco" and expected is not None:
            got = report.kept_boxes + report.num_problems + report.degenerate
            if got != expected:
                leaks.append(f"{path} ({named}, {policy}): {expected} rows, accounted {got}")
        return "loaded"
    except (AnnotationError, FileNotFoundError) as e:
        if path not in str(e) and spec.name not in str(e):
            crashes.append(
                f"{path} ({named}, {policy}): error without the file name: {str(e)[:200]}"
            )
        return type(e).__name__
    except Exception:
        crashes.append(f"{path} ({named}, {policy}):\n{traceback.format_exc()}")
        if keep:
            os.makedirs(keep, exist_ok=True)
            dst = os.path.join(keep, os.path.basename(path))
            (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, dst)
        return "CRASH"


def fuzz(num_files: int, seed: int = 0, keep: str = None, work: str = None):
    """Returns (stats Counter, list of crash descriptions, list of accounting failures)."""
    rng = random.Random(seed)
    own_work = work is None
    work = work or tempfile.mkdtemp(prefix="fuzz_parsers_")
    stats, crashes, leaks = collections.Counter(), [], []
    logging.getLogger("gaussian_retina").setLevel(logging.ERROR)
    try:
        seeds = _write_seeds(work)
        formats = sorted(seeds)
        columns = {"sku110k": SKU110K_COLUMNS, "benchmark": BENCHMARK_COLUMNS}
        for k in range(num_files):
            fmt = formats[k % len(formats)]
            src, image_root = seeds[fmt]
            case = os.path.join(work, f"case{k}")
            if fmt == "yolo":
                shutil.copytree(src, case)
                files = sorted(os.listdir(case))
                for _ in range(rng.randint(1, 3)):
                    victim = os.path.join(case, rng.choice(files))
                    data = open(victim, "rb").read()
                    open(victim, "wb").write(_mutate_bytes(data, rng))
                if rng.random() < 0.1:  # a label file without its image
                    shutil.copy(os.path.join(case, files[0]), os.path.join(case, "ghost.txt"))
                path = case
            else:
                data = open(src, "rb").read()
                for _ in range(rng.randint(1, 3)):
                    data = (_mutate_json if fmt == "coco" else _mutate_bytes)(data, rng)
                path = case + os.path.splitext(src)[1]
                open(path, "wb").write(data)
            expected = _data_rows(fmt, path, columns.get(fmt))
            for named in (fmt, "auto"):
                for policy in ("error", "skip"):
                    spec = RetailDatasetSpec(
                        f"fuzz{k}", image_root, path, named, None, True, 1.0, work
                    )
                    outcome = _load_once(spec, fmt, policy, expected, crashes, leaks, keep)
                    stats[(fmt, named == "auto", policy, outcome)] += 1
            (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
            for f in os.listdir(work):  # COCO caches are not made here; tidy anything else
                if f.startswith(".fuzz"):
                    os.remove(os.path.join(work, f))
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return stats, crashes, leaks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="corrupted files to make")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="copy crashing inputs here")
    args = parser.parse_args(argv)
    if not os.path.isdir(SHARED_DATA):
        sys.exit(f"real data absent: {SHARED_DATA}")
    stats, crashes, leaks = fuzz(args.files, args.seed, args.keep)
    print(
        f"{args.files} corrupted files (seed {args.seed}), each loaded 4 ways "
        "(format named / detected x policy error / skip):"
    )
    print("| seed format | fmt | policy | outcome | loads |")
    print("|---|---|---|---|---|")
    for (fmt, auto, policy, outcome), n in sorted(stats.items()):
        print(f"| {fmt} | {'auto' if auto else 'named'} | {policy} | {outcome} | {n} |")
    print(f"crashes (anything but a clear error): {len(crashes)}")
    print(f"accounting failures (rows lost silently): {len(leaks)}")
    for c in crashes[:10] + leaks[:10]:
        print(c)
    sys.exit(1 if crashes or leaks else 0)


if __name__ == "__main__":
    main()
