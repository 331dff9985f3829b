"""
What happens to bad annotation input: a clear error naming file, line and problem, or a
counted skip, chosen per dataset when it is registered (``bad_input_policy`` of
:func:`register_retail_dataset`; :func:`configure_shelf_datasets` applies a cfg's choice).

Nothing is dropped silently: every problem lands in an :class:`InputReport`, which either
raises one :class:`AnnotationError` listing the problems (policy "error") or logs one
summary line per dataset saying what was kept, dropped and clipped (policy "skip").
"""

import logging
from collections import OrderedDict
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "AnnotationError",
    "BAD_INPUT_POLICIES",
    "InputReport",
    "Problem",
    "check_bad_input_policy",
]

logger = logging.getLogger(__name__)

BAD_INPUT_POLICIES = ("error", "skip")

# Problems quoted one per line in an error message / log; the rest are counted.
_MAX_QUOTED = 20


def check_bad_input_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`BAD_INPUT_POLICIES`, else a ValueError."""
    if policy not in BAD_INPUT_POLICIES:
        raise ValueError(
            f"Unknown bad-input policy {policy!r}; expected one of {BAD_INPUT_POLICIES}"
        )
    return policy


class Problem(NamedTuple):
    """One malformed row (or entry) of an annotation source."""

    file: str
    location: str  # "line 12", "annotation id 7", "images[3]"
    reason: str  # a short fixed phrase, used as the counting key
    detail: str  # what exactly was wrong ("" when only counted)

    def __str__(self):
        return f"{self.file}, {self.location}: {self.reason}" + (
            f" ({self.detail})" if self.detail else ""
        )


class AnnotationError(ValueError):
    """
    Raised for annotation input that cannot be used. ``problems`` lists every malformed row
    found (the message quotes the first ones and counts all, by reason).
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


class _Chunk(NamedTuple):
    reason: str
    files: List[str]  # one per location, or a single file for all
    unit: str
    locations: np.ndarray  # (K,) int
    details: List[str]  # details of the first few locations
    grouped: bool  # one problem shared by all locations (e.g. the rows of a missing image)


class InputReport:
    """
    Collects the problems and the clip/drop counts of one dataset while it is parsed.

    Locations are kept as arrays so that reporting a million bad rows stays cheap; details
    (the offending value) are kept for the first few of each reason.
    """

    def __init__(self, dataset_name: str, source: str):
        self.dataset_name = dataset_name
        self.source = source
        self._chunks: List[_Chunk] = []
        self.rows_dropped = OrderedDict()  # reason -> rows
        self.images_dropped = OrderedDict()  # reason -> images
        self.clipped = 0  # boxes partly outside the image, clipped to it
        self.degenerate = 0  # boxes thinner than the minimum size after clipping, dropped
        self.background_images = 0  # images listed without any box (kept)
        self.kept_images = 0
        self.kept_boxes = 0

    # ---------------------------------------------------------------- collecting
    def add(
        self,
        reason: str,
        files,
        locations,
        details: Optional[Sequence[str]] = None,
        unit: str = "line",
        grouped: bool = False,
    ) -> None:
        """
        Record rows dropped for ``reason``.

        Args:
            files: one file name for all locations, or a sequence with one per location.
            locations: (K,) line numbers (1-based) or entry ids.
            details: optional (K,) or shorter sequence of "what was wrong" strings.
            grouped: the rows share one cause (``details[0]``), quoted once with their
                line ranges.
        """
        locations = np.asarray(locations, dtype=np.int64).reshape(-1)
        if locations.size == 0:
            return
        files = [files] if isinstance(files, str) else list(files)
        if len(files) > 1 and len(set(files)) == 1:
            files = files[:1]
        details = list(details[:_MAX_QUOTED]) if details is not None else []
        self._chunks.append(_Chunk(reason, files, unit, locations, details, grouped))
        self.rows_dropped[reason] = self.rows_dropped.get(reason, 0) + int(locations.size)

    def add_images(self, reason: str, n: int) -> None:
        if n:
            self.images_dropped[reason] = self.images_dropped.get(reason, 0) + int(n)

    # ---------------------------------------------------------------- reporting
    @property
    def num_problems(self) -> int:
        return sum(self.rows_dropped.values())

    def problems(self, limit: Optional[int] = None) -> List[Problem]:
        """Every problem found, in the order found (or the first ``limit``)."""
        out = []
        for c in self._chunks:
            n = c.locations.size if limit is None else min(c.locations.size, limit - len(out))
            for i in range(n):
                f = c.files[i] if len(c.files) > 1 else c.files[0]
                j = 0 if c.grouped else i
                d = c.details[j] if j < len(c.details) else ""
                out.append(Problem(f, f"{c.unit} {int(c.locations[i])}", c.reason, d))
            if limit is not None and len(out) >= limit:
                break
        return out

    def quoted(self, limit: int = _MAX_QUOTED) -> List[str]:
        """The first problems as message lines; rows sharing one cause on one line."""
        out = []
        for c in self._chunks:
            if len(out) >= limit:
                break
            if c.grouped and len(c.files) == 1:
                detail = f" ({c.details[0]})" if c.details else ""
                where = (
                    f"{c.unit} {int(c.locations[0])}"
                    if c.locations.size == 1
                    else f"{c.unit}s {_ranges(c.locations)}"
                )
                out.append(f"{c.files[0]}, {where}: {c.reason}{detail}")
                continue
            for i in range(min(c.locations.size, limit - len(out))):
                f = c.files[i] if len(c.files) > 1 else c.files[0]
                d = c.details[i] if i < len(c.details) else ""
                out.append(str(Problem(f, f"{c.unit} {int(c.locations[i])}", c.reason, d)))
        return out

    def counts_by_reason(self) -> str:
        parts = []
        for reason, rows in self.rows_dropped.items():
            imgs = self.images_dropped.get(reason)
            parts.append(f"{reason}: {rows:,} rows" + (f" of {imgs:,} images" if imgs else ""))
        return "; ".join(parts)

    def summary(self) -> str:
        """The one line per dataset: what was kept, dropped and clipped."""
        s = (
            f"Dataset '{self.dataset_name}' ({self.source}): kept {self.kept_images:,} images, "
            f"{self.kept_boxes:,} boxes"
        )
        if self.background_images:
            s += f" ({self.background_images:,} images without boxes)"
        if self.rows_dropped:
            s += f"; dropped {self.num_problems:,} rows [{self.counts_by_reason()}]"
        else:
            s += "; dropped 0 rows"
        lost = self.images_dropped.get("image left without boxes", 0)
        if lost:
            s += f"; dropped {lost:,} images whose rows were all dropped"
        s += f"; clipped {self.clipped:,} boxes partly outside their image"
        s += (
            f"; dropped {self.degenerate:,} degenerate boxes "
            "(thinner than the minimum after clipping)"
        )
        return s

    def error_message(self) -> str:
        quoted = self.quoted()
        lines = [
            f"Dataset '{self.dataset_name}': {self.num_problems:,} malformed rows in {self.source} "
            f"[{self.counts_by_reason()}]:"
        ]
        lines += ["  " + str(p) for p in quoted]
        if len(quoted) == _MAX_QUOTED:
            lines.append(
                "  ... (every one: AnnotationError.problems, or tools/validate_dataset.py)"
            )
        lines.append(
            "Fix the annotations, or set cfg.DATASETS.BAD_INPUT_POLICY = 'skip' "
            "(register_retail_dataset(..., bad_input_policy='skip')) to drop them, counted; "
            "tools/validate_dataset.py lists every defect."
        )
        return "\n".join(lines)

    def finish(self, policy: str) -> None:
        """Raise under policy "error" if anything was malformed, else log the summary."""
        check_bad_input_policy(policy)
        if self.num_problems and policy == "error":
            raise AnnotationError(self.error_message(), self.problems())
        if self.num_problems:
            for q in self.quoted(limit=5):
                logger.warning("Skipped: %s", q)
        level = logging.WARNING if self.num_problems or self.degenerate else logging.INFO
        logger.log(level, self.summary())


def _ranges(locations: np.ndarray, max_runs: int = 6) -> str:
    """ "2-40 (39)" or "3, 7-9, 12 (5)": consecutive runs of locations, then the count."""
    locs = np.unique(locations)
    breaks = np.flatnonzero(np.diff(locs) != 1) + 1
    runs = np.split(locs, breaks)
    text = ", ".join(f"{r[0]}" if r.size == 1 else f"{r[0]}-{r[-1]}" for r in runs[:max_runs])
    if len(runs) > max_runs:
        text += ", ..."
    return f"{text} ({locations.size:,} rows)"
