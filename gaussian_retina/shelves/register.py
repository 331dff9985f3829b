"""
``register_retail_dataset``: one entry point for shelf datasets in any supported format,
registered lazily in Detectron2's DatasetCatalog / MetadataCatalog, with a cached COCO json
for COCOEvaluator. A dataset's options (the bad-input policy, the cache folder) are part of its
registration, kept in its metadata as ``retail_spec``: nothing is process-wide.
"""

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict

from .bad_input import AnnotationError, InputReport, check_bad_input_policy
from .box_table import (
    COCO_CATEGORY_ID,
    THING_CLASSES,
    BoxTable,
    clean_table,
    table_to_dicts,
)
from .coco_yolo import parse_coco_json, parse_yolo_labels
from .retail_csv import parse_benchmark_csv, parse_sku110k_csv, sniff_csv_format

__all__ = [
    "FORMATS",
    "RetailDatasetSpec",
    "detect_format",
    "configure_shelf_datasets",
    "ensure_coco_json",
    "load_retail_dataset",
    "load_retail_table",
    "register_cfg_datasets",
    "register_retail_dataset",
    "retail_dataset_spec",
]

logger = logging.getLogger(__name__)

FORMATS = ("sku110k", "benchmark", "coco", "yolo")
# Boxes of the retail CSV formats fit the pixels as stored; COCO and YOLO tools apply EXIF.
_DEFAULT_APPLY_EXIF = {"sku110k": False, "benchmark": False, "coco": True, "yolo": True}
# Bump when parsing or cleaning changes what a cached COCO json would contain.
_CACHE_VERSION = "1"


@dataclass(frozen=True)
class RetailDatasetSpec:
    """How one dataset is read; the arguments of :func:`register_retail_dataset`."""

    name: str
    image_root: str
    annotations: str
    fmt: str = "auto"  # one of FORMATS or "auto"
    apply_exif: Optional[bool] = None  # None: the format's default
    check_image_sizes: bool = True
    min_box_size: float = 1.0
    coco_cache_dir: Optional[str] = None  # None: next to the annotations, see _cache_dir
    bad_input_policy: str = "error"  # see bad_input.BAD_INPUT_POLICIES

    def resolved(self) -> Tuple[str, bool]:
        """(format, apply_exif) once the annotations can be looked at."""
        fmt = detect_format(self.annotations) if self.fmt == "auto" else self.fmt
        exif = _DEFAULT_APPLY_EXIF[fmt] if self.apply_exif is None else self.apply_exif
        return fmt, exif


def detect_format(annotations: str) -> str:
    """
    "yolo" for a folder, "coco" for a json (by extension or a leading "{"), else the CSV
    flavour from the first line: 8 fields "sku110k", 6 fields "benchmark".
    """
    if os.path.isdir(annotations):
        return "yolo"
    if not os.path.exists(annotations):
        raise FileNotFoundError(
            f"Annotations not found: {annotations} (see datasets/README.md for the expected tree)"
        )
    if annotations.lower().endswith(".json"):
        return "coco"
    with open(annotations, "rb") as f:
        if f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            return "coco"
    return sniff_csv_format(annotations)


def load_retail_table(
    spec: RetailDatasetSpec, policy: Optional[str] = None
) -> Tuple[BoxTable, InputReport, bool]:
    """
    Parse and clean one dataset under ``policy`` (default: the spec's ``bad_input_policy``).

    Returns:
        the cleaned table, its report, and the apply_exif choice.

    Raises:
        AnnotationError: malformed rows under policy "error", or nothing usable at all.
    """
    fmt, apply_exif = spec.resolved()
    if not os.path.isdir(spec.image_root):
        raise FileNotFoundError(
            f"Image folder of dataset '{spec.name}' not found: {spec.image_root} "
            "(see datasets/README.md for the expected tree)"
        )
    report = InputReport(spec.name, spec.annotations)
    if fmt == "sku110k":
        table = parse_sku110k_csv(spec.annotations, report)
    elif fmt == "benchmark":
        table = parse_benchmark_csv(spec.annotations, report)
    elif fmt == "coco":
        table = parse_coco_json(spec.annotations, report)
    else:
        table = parse_yolo_labels(spec.annotations, spec.image_root, report, apply_exif=apply_exif)
    clean_table(
        table,
        spec.image_root,
        report,
        apply_exif=apply_exif,
        check_image_sizes=spec.check_image_sizes,
        min_box_size=spec.min_box_size,
    )
    report.finish(policy or spec.bad_input_policy)
    if table.num_images == 0:
        raise AnnotationError(
            f"Dataset '{spec.name}': nothing usable in {spec.annotations} with images in "
            f"{spec.image_root}. {report.summary()}"
        )
    return table, report, apply_exif


def load_retail_dataset(name: str) -> List[dict]:
    """The Detectron2 dicts of a dataset registered with :func:`register_retail_dataset`."""
    spec = retail_dataset_spec(name)
    table, _, apply_exif = load_retail_table(spec)
    dicts = table_to_dicts(table, spec.image_root, apply_exif=apply_exif)
    if spec.bad_input_policy == "skip":
        # The policy travels with the records, so that the data loader skips an image that
        # fails to decode only for the datasets whose owner chose skipping.
        for d in dicts:
            d["bad_input_policy"] = "skip"
    return dicts


# ------------------------------------------------------------------ COCO json cache
def _hash_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _fingerprint(spec: RetailDatasetSpec) -> str:
    """Changes whenever the annotations, the image file names or the loading options do."""
    fmt, apply_exif = spec.resolved()
    h = hashlib.blake2b(digest_size=8)
    h.update(
        repr(
            (
                _CACHE_VERSION,
                fmt,
                apply_exif,
                spec.bad_input_policy,
                spec.check_image_sizes,
                spec.min_box_size,
                os.path.abspath(spec.image_root),
            )
        ).encode()
    )
    if os.path.isdir(spec.annotations):
        for dirpath, _, files in sorted(os.walk(spec.annotations)):
            for f in sorted(files):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    else:
        _hash_file(h, spec.annotations)
    for dirpath, _, files in sorted(os.walk(spec.image_root)):
        h.update(("\n".join([dirpath] + sorted(files)) + "\n").encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _cache_dir(spec: RetailDatasetSpec) -> str:
    if spec.coco_cache_dir:
        return spec.coco_cache_dir
    next_to_data = os.path.join(os.path.dirname(os.path.abspath(spec.annotations)), "coco_cache")
    try:
        os.makedirs(next_to_data, exist_ok=True)
        if os.access(next_to_data, os.W_OK):
            return next_to_data
    except OSError:
        pass
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gaussian_retina", "coco_json")


def ensure_coco_json(name: str) -> str:
    """
    Path of the COCO json of a registered retail dataset, converting it on first use.

    The file name carries a fingerprint of the annotations, the image names and the options
    (policy included), so a stale cache is never reused and a fresh one is made only once.
    """
    spec = retail_dataset_spec(name)
    directory = _cache_dir(spec)
    path = os.path.join(directory, f"{name}.{_fingerprint(spec)}.coco.json")
    if os.path.isfile(path):
        return path
    coco = convert_to_coco_dict(name)
    os.makedirs(directory, exist_ok=True)
    # Atomic: several ranks may convert at once, and a reader must never see half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(coco, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    logger.info("Wrote COCO json of '%s' for evaluation: %s", name, path)
    return path


class RetailMetadata(Metadata):
    """
    Metadata whose ``json_file`` is the cached COCO json, converted when first asked for,
    so ``COCOEvaluator(name)`` works whether or not the dataset was loaded before.
    """

    @property
    def json_file(self) -> str:
        try:
            return ensure_coco_json(self.name)
        except AttributeError as e:  # would be swallowed by Metadata.__getattr__
            raise RuntimeError(str(e)) from e


def register_retail_dataset(
    name: str,
    image_root: str,
    annotations: str,
    fmt: str = "auto",
    *,
    apply_exif: Optional[bool] = None,
    check_image_sizes: bool = True,
    min_box_size: float = 1.0,
    coco_cache_dir: Optional[str] = None,
    bad_input_policy: str = "error",
    **metadata,
) -> None:
    """
    Register a shelf dataset under ``name``. Nothing is read until ``DatasetCatalog.get(name)``
    (or ``MetadataCatalog.get(name).json_file``), so the folders may be absent at import.

    Args:
        image_root: folder of the images; annotation file names are relative to it.
        annotations: a SKU-110K CSV, a benchmark CSV, a COCO json, or a YOLO label folder.
        fmt: "auto" (detected from the annotations when loaded), or one of
            "sku110k", "benchmark", "coco", "yolo".
        apply_exif: whether the boxes fit the EXIF-oriented pixels. None: the format's
            default (False for both CSV formats, True for COCO and YOLO). Stored in every
            record as "apply_exif" for :func:`read_shelf_image`.
        check_image_sizes: read every image header at load time, so recorded sizes that
            disagree with the file are found before training (about 0.1 ms per image).
        min_box_size: boxes thinner than this (pixels) after clipping are dropped, counted.
        coco_cache_dir: where the COCO json for evaluation goes (default: a ``coco_cache/``
            folder next to the annotations, or ``~/.cache/gaussian_retina/coco_json`` where
            that is read-only).
        bad_input_policy: what loading does with malformed rows and unusable images: "error"
            raises :class:`AnnotationError` naming file, line and problem; "skip" drops them,
            counted in one summary line.
        metadata: extra metadata (e.g. ``evaluator_type``).
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"Unknown annotation format {fmt!r}; expected 'auto' or one of {FORMATS}")
    check_bad_input_policy(bad_input_policy)
    spec = RetailDatasetSpec(
        name,
        image_root,
        annotations,
        fmt,
        apply_exif,
        check_image_sizes,
        min_box_size,
        coco_cache_dir,
        bad_input_policy,
    )
    if name in DatasetCatalog:  # registering again replaces, as with new options
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_retail_dataset(name))
    # MetadataCatalog.get() may have made a plain Metadata already; keep what it holds.
    attrs = MetadataCatalog.get(name).as_dict() if name in MetadataCatalog else {}
    attrs.pop("name", None)
    attrs.update(
        thing_classes=list(THING_CLASSES),
        thing_dataset_id_to_contiguous_id={COCO_CATEGORY_ID: 0},
        image_root=image_root,
        annotations=annotations,
        annotation_format=fmt,
        evaluator_type="coco",
        retail_spec=spec,
    )
    attrs.update(metadata)
    MetadataCatalog[name] = RetailMetadata(name=name).set(**attrs)


def retail_dataset_spec(name: str) -> Optional[RetailDatasetSpec]:
    """How a dataset registered by :func:`register_retail_dataset` is read; None for others."""
    if name not in MetadataCatalog:
        return None
    return MetadataCatalog.get(name).get("retail_spec")


def register_cfg_datasets(cfg) -> List[str]:
    """
    Register the shelf datasets that ``cfg.DATASETS.REGISTER`` lists, each a (name, image
    folder, annotations[, format]) tuple, with the config's bad-input policy ("error" when
    the key is "") and COCO json cache. A dataset registered already with the same options is
    left as it is, so its cached records and COCO json stay valid.

    Returns:
        the names registered or confirmed.
    """
    names = []
    for entry in cfg.DATASETS.REGISTER:
        if (
            not isinstance(entry, (list, tuple))
            or len(entry) not in (3, 4)
            or not all(isinstance(v, str) and v for v in entry)
        ):
            raise ValueError(
                "DATASETS.REGISTER takes (name, image folder, annotations) or (name, image "
                f"folder, annotations, format) tuples of non-empty strings; got {entry!r}"
            )
        name, image_root, annotations = entry[:3]
        fmt = entry[3] if len(entry) == 4 else "auto"
        spec = RetailDatasetSpec(
            name,
            image_root,
            annotations,
            fmt,
            coco_cache_dir=cfg.DATASETS.COCO_JSON_CACHE_DIR or None,
            bad_input_policy=check_bad_input_policy(cfg.DATASETS.BAD_INPUT_POLICY or "error"),
        )
        if retail_dataset_spec(name) != spec:
            if name in DatasetCatalog and retail_dataset_spec(name) is None:
                raise ValueError(
                    f"DATASETS.REGISTER names {name!r}, which is already registered as another "
                    "kind of dataset (a predefined split?); choose another name"
                )
            _register_spec(spec)
        names.append(name)
    return names


def configure_shelf_datasets(cfg, names=None) -> None:
    """
    Register the datasets of ``cfg.DATASETS.REGISTER`` (:func:`register_cfg_datasets`), then
    give the retail datasets that ``cfg`` names (DATASETS.TRAIN and TEST, or ``names``) the
    options of ``cfg.DATASETS`` that the config sets: BAD_INPUT_POLICY when not "" (the run's
    choice; "" keeps each dataset's own) and COCO_JSON_CACHE_DIR when not "". They are
    registered again where their options differ; other datasets are left alone.
    """
    register_cfg_datasets(cfg)
    names = names if names is not None else (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)
    options = {}
    if cfg.DATASETS.BAD_INPUT_POLICY:
        options["bad_input_policy"] = check_bad_input_policy(cfg.DATASETS.BAD_INPUT_POLICY)
    if cfg.DATASETS.COCO_JSON_CACHE_DIR:
        options["coco_cache_dir"] = cfg.DATASETS.COCO_JSON_CACHE_DIR
    for name in names:
        spec = retail_dataset_spec(name)
        if spec is None or replace(spec, **options) == spec:
            continue
        # Registering again keeps the rest of the dataset's metadata.
        _register_spec(replace(spec, **options))


def _register_spec(spec: RetailDatasetSpec) -> None:
    register_retail_dataset(
        spec.name,
        spec.image_root,
        spec.annotations,
        spec.fmt,
        apply_exif=spec.apply_exif,
        check_image_sizes=spec.check_image_sizes,
        min_box_size=spec.min_box_size,
        coco_cache_dir=spec.coco_cache_dir,
        bad_input_policy=spec.bad_input_policy,
    )
