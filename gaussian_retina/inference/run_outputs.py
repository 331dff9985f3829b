"""
The files of one prediction run, written as the run goes, and the journal that lets the same
command, rerun on the same output folder, resume where a crash or a kill stopped it.
"""

import csv
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .writers import CocoResultsWriter, detections_csv_rows

__all__ = ["RunOutputs", "SettingsMismatchError"]


# Settings a resumed run may change: they do not change what is predicted.
_NOT_COMPARED = ("device", "batch_size", "num_threads")


class SettingsMismatchError(ValueError):
    """The output folder holds a run made with other settings; resuming would mix the two."""


class RunOutputs:
    """
    Under ``output_dir``:

    * ``detections/<name>.csv``: per photo, SKU-110K's layout plus a score column, no header
      (``<name>`` is the photo's path under the input root, without its extension);
    * ``detections.csv``: the same rows for the whole run;
    * ``counts.csv``: per photo, its product count by each method (with a header);
    * ``coco_results.json``: all detections, ``images`` mapping ids to the photos' names;
    * ``summary.json``: the run's settings, calibration, counts and timings;
    * ``photos.jsonl``: the journal, one line per photo done (its detections and counts) or
      skipped; ``run.json``: the settings the journal was made with.

    The per-photo files, ``detections.csv``, ``counts.csv`` and the journal grow photo by photo;
    ``summary.json`` and ``coco_results.json`` are rewritten as the run goes (the json every
    ``coco_every_s`` seconds, since it holds every detection so far). :meth:`finish` writes all
    run-level files again from the journal, in the photos' order, so that a run that was stopped
    and resumed ends with the same files as one that was not.
    """

    def __init__(
        self,
        output_dir,
        settings: Dict,
        class_names: Sequence[str] = ("object",),
        coco_every_s: float = 60.0,
    ):
        self.dir = Path(output_dir)
        (self.dir / "detections").mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self.coco_every_s = coco_every_s
        self._coco_written = time.monotonic()
        self._check_settings(settings)
        self.records: Dict[str, Dict] = self._read_journal()

    @property
    def journal_path(self) -> Path:
        return self.dir / "photos.jsonl"

    def _check_settings(self, settings: Dict) -> None:
        path = self.dir / "run.json"
        settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
        if path.exists() and self.journal_path.exists():
            before = json.loads(path.read_text())
            changed = sorted(
                k
                for k in set(before) | set(settings)
                if k not in _NOT_COMPARED and before.get(k) != settings.get(k)
            )
            if changed:
                raise SettingsMismatchError(
                    f"{self.dir} holds a run made with other settings ({', '.join(changed)}); "
                    "rerun with those settings to resume it, or give another --output"
                )
        path.write_text(json.dumps(settings, indent=1, sort_keys=True))

    def _read_journal(self) -> Dict[str, Dict]:
        records = {}
        if not self.journal_path.exists():
            return records
        good_bytes = 0
        with open(self.journal_path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # a line cut short by the stop; the photo is predicted again
                if not line.endswith(b"\n"):
                    break
                records[rec["name"]] = rec
                good_bytes += len(line)
        if good_bytes != self.journal_path.stat().st_size:
            with open(self.journal_path, "r+b") as f:
                f.truncate(good_bytes)
        return records

    def done(self, name: str) -> bool:
        return name in self.records

    def add_photo(self, record: Dict) -> None:
        """
        One photo, predicted or skipped: ``record`` has ``name``, ``image_name``, and either
        ``skipped`` (the reason) or ``image_size`` (H, W), ``boxes``, ``scores``, ``classes``
        and ``count``. Its CSV is complete before its journal line is written.
        """
        if "skipped" not in record:
            record = dict(record)
            record["boxes"] = np.round(np.asarray(record["boxes"], float).reshape(-1, 4), 2).tolist()
            record["scores"] = np.round(np.asarray(record["scores"], float), 5).tolist()
            record["classes"] = np.asarray(record["classes"], int).tolist()
            rows = self._rows(record)
            path = self.dir / "detections" / f"{record['name']}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(rows)
            os.replace(tmp, path)
            with open(self.dir / "detections.csv", "a", newline="") as f:
                csv.writer(f).writerows(rows)
            counts_path = self.dir / "counts.csv"
            new_file = not counts_path.exists() or counts_path.stat().st_size == 0
            with open(counts_path, "a", newline="") as f:
                writer = csv.writer(f)
                if new_file:
                    writer.writerow(["image_name"] + sorted(record["count"]))
                writer.writerow(self._count_row(record, sorted(record["count"])))
        with open(self.journal_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["name"]] = record

    def checkpoint(self, names: Sequence[str], summary: Dict) -> None:
        """Rewrites summary.json, and coco_results.json when it is older than ``coco_every_s``."""
        self._write_summary(names, summary)
        if time.monotonic() - self._coco_written >= self.coco_every_s:
            self._write_coco(names)

    def finish(self, names: Sequence[str], summary: Dict) -> Dict:
        """All run-level files from the journal, in the order of ``names``; returns the summary."""
        done = self._in_order(names)
        with open(self.dir / "detections.csv", "w", newline="") as f:
            writer = csv.writer(f)
            for rec in done:
                writer.writerows(self._rows(rec))
        methods = sorted({m for rec in done for m in rec["count"]})
        with open(self.dir / "counts.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_name"] + methods)
            writer.writerows(self._count_row(rec, methods) for rec in done)
        self._write_coco(names)
        return self._write_summary(names, summary)

    def _in_order(self, names, skipped=False) -> List[Dict]:
        recs = [self.records[n] for n in names if n in self.records]
        return [r for r in recs if ("skipped" in r) == skipped]

    def _rows(self, rec: Dict):
        return detections_csv_rows(
            rec["image_name"],
            rec["image_size"],
            rec["boxes"],
            rec["scores"],
            self.class_names,
            rec["classes"],
        )

    @staticmethod
    def _count_row(rec: Dict, methods: Sequence[str]) -> List:
        return [rec["image_name"]] + [rec["count"].get(m, "") for m in methods]

    def _write_coco(self, names) -> None:
        coco = CocoResultsWriter(self.class_names)
        for rec in self._in_order(names):
            coco.add(rec["image_name"], rec["image_size"], rec["boxes"], rec["scores"], rec["classes"])
        _atomic_write(self.dir / "coco_results.json", json.dumps(coco.as_dict()))
        self._coco_written = time.monotonic()

    def _write_summary(self, names, summary: Dict) -> Dict:
        done = self._in_order(names)
        skipped = self._in_order(names, skipped=True)
        seconds = sum(r.get("seconds", 0.0) for r in done)
        out = dict(summary)
        out.update(
            {
                "photos_total": len(names),
                "photos_done": len(done),
                "photos_skipped": len(skipped),
                "skipped": [{"file": r["file"], "reason": r["skipped"]} for r in skipped],
                "products_total": int(sum(r["count"].get("products", 0) for r in done)),
                "seconds_total": round(seconds, 2),
                "seconds_per_photo": round(seconds / max(len(done), 1), 3),
                "photos": [
                    {k: r[k] for k in r if k not in ("boxes", "scores", "classes")} for r in done
                ],
            }
        )
        _atomic_write(self.dir / "summary.json", json.dumps(out, indent=1))
        return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
