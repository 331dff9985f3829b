"""
Writing predictions: a CSV per photo in the SKU-110K layout plus a score column, and one COCO
json for the run whose ``images`` list maps ids to file names.
"""

import csv
import json
from typing import Dict, List, Sequence

import numpy as np

__all__ = [
    "CSV_COLUMNS",
    "CocoResultsWriter",
    "detections_csv_rows",
    "read_coco_results",
    "read_detections_csv",
    "write_detections_csv",
]

# SKU-110K's annotation layout with the detection's score appended; written without a header, as
# SKU-110K's own files are.
CSV_COLUMNS = (
    "image_name",
    "x1",
    "y1",
    "x2",
    "y2",
    "class",
    "image_width",
    "image_height",
    "score",
)


def detections_csv_rows(image_name: str, image_size, boxes, scores, class_names, classes=None):
    """
    Rows of :data:`CSV_COLUMNS` for one photo: SKU-110K's layout (integer pixels, as its readers
    parse them with ``int()``) and the score.

    Args:
        image_size: (H, W) of the photo the boxes live in.
        boxes: (N, 4) XYXY in pixels; scores, classes: (N,).
        class_names: name of each class id ("object" for the one-class shelf models).
    """
    h, w = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.zeros(len(boxes), int) if classes is None else np.asarray(classes)
    return [
        [image_name, *(int(round(v)) for v in box), class_names[int(c)], int(w), int(h)]
        + [f"{float(s):.4f}"]
        for box, s, c in zip(boxes, np.asarray(scores), classes)
    ]


def write_detections_csv(
    path, image_name: str, image_size, boxes, scores, class_names: Sequence[str], classes=None
) -> None:
    """One photo's detections as :func:`detections_csv_rows`, no header (as SKU-110K's files)."""
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(
            detections_csv_rows(image_name, image_size, boxes, scores, class_names, classes)
        )


def read_detections_csv(path) -> List[Dict]:
    """
    Rows of :func:`write_detections_csv` as dicts (numbers parsed); SKU-110K's own files (no
    score column) read with score 1. A bad row raises ValueError naming the file and the line.
    """
    rows = []
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if line_no == 1 and row and row[0] == CSV_COLUMNS[0]:
                continue  # a header, as some SKU-110K-style files have
            if len(row) not in (len(CSV_COLUMNS), len(CSV_COLUMNS) - 1):
                raise ValueError(
                    f"{path}, line {line_no}: {len(row)} columns, expected {len(CSV_COLUMNS)}"
                )
            try:
                rows.append(
                    {
                        "image_name": row[0],
                        "box": [float(v) for v in row[1:5]],
                        "class": row[5],
                        "image_width": int(row[6]),
                        "image_height": int(row[7]),
                        "score": float(row[8]) if len(row) > 8 else 1.0,
                    }
                )
            except ValueError as e:
                raise ValueError(f"{path}, line {line_no}: {e}") from None
    return rows


class CocoResultsWriter:
    """
    Accumulates a run's detections as one COCO-format dict: ``images`` (id, file_name, width,
    height), ``categories`` and ``annotations`` with ``score`` (bbox XYWH), which pycocotools'
    ``COCO.loadRes`` reads through its ``annotations`` list.
    """

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []

    def add(self, file_name: str, image_size, boxes, scores, classes=None) -> int:
        image_id = len(self.images) + 1
        h, w = image_size
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)}
        )
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        classes = np.zeros(len(boxes), int) if classes is None else np.asarray(classes)
        for (x1, y1, x2, y2), s, c in zip(boxes, np.asarray(scores), classes):
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c) + 1,
                    "bbox": [
                        round(float(x1), 2),
                        round(float(y1), 2),
                        round(float(x2 - x1), 2),
                        round(float(y2 - y1), 2),
                    ],
                    "score": round(float(s), 5),
                }
            )
        return image_id

    def as_dict(self) -> Dict:
        return {
            "images": self.images,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)],
            "annotations": self.annotations,
        }

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.as_dict(), f)


def read_coco_results(path) -> Dict[str, List[Dict]]:
    """file_name -> its detections ({"bbox": XYXY, "score", "category_id"}) from a saved run."""
    with open(path) as f:
        data = json.load(f)
    names = {im["id"]: im["file_name"] for im in data["images"]}
    out = {name: [] for name in names.values()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        out[names[a["image_id"]]].append(
            {"bbox": [x, y, x + w, y + h], "score": a["score"], "category_id": a["category_id"]}
        )
    return out
