"""
Reading shelf photographs for training and evaluation.

Detectron2's ``read_image`` always applies the EXIF orientation tag. The retail annotation
formats (SKU-110K CSV, the product-detection benchmark CSV) draw their boxes on the pixels
as stored, and some of their photos carry a stale tag (see ../shared/data/README.md,
``exif_stale/``): applying it would put every box in the wrong place. So each dataset record
says which pixels its boxes fit, in ``dataset_dict["apply_exif"]``:

* ``False``: the pixels as stored (the retail CSV formats set this);
* ``True`` or absent: the EXIF orientation applied, as ``read_image`` does (COCO json, YOLO).

Broken images raise :class:`BadImageError` naming the file and the problem, so that a data
loader worker never dies with a bare decoder traceback.
"""

import io
from typing import Tuple

import cv2
import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

__all__ = ["BadImageError", "read_image_size", "read_shelf_image", "exif_orientation"]

_EXIF_ORIENTATION = 0x0112
# Orientations 5-8 swap height and width.
_TRANSPOSING = (5, 6, 7, 8)
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BadImageError(ValueError):
    """An image that is missing, truncated, corrupt, or not the size its annotations record."""


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened PIL image (1 when absent or unreadable)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF blocks raise all sorts; the tag is then unusable
        return 1


def read_image_size(
    file_name: str, apply_exif: bool = False, check_complete: bool = False
) -> Tuple[int, int]:
    """
    (height, width) of an image from its header, without decoding the pixels.

    Args:
        apply_exif: give the size after the EXIF orientation is applied (swapped for the
            transposing orientations 5-8) instead of the stored size.
        check_complete: also look at the file's last bytes; a JPEG or PNG whose end marker is
            missing is decoded in full, and raises if it is cut short. Costs one seek for a
            whole file, so a dataset's truncated photos are found once, when it is loaded,
            instead of in the data loader at every epoch.
    """
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            w, h = im.size
            if apply_exif and exif_orientation(im) in _TRANSPOSING:
                w, h = h, w
            if check_complete:
                f.seek(0)
                head = f.read(len(_PNG_SIGNATURE))
                f.seek(0, io.SEEK_END)
                f.seek(max(0, f.tell() - 64))
                truncated = _truncation_problem(head + f.read())
                if truncated:
                    try:
                        im.load()  # trailing junk after a complete image decodes fine
                    except (OSError, SyntaxError, ValueError) as e:
                        raise BadImageError(f"{file_name}: {truncated} ({e})") from None
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(f"{file_name}: image file is missing") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{file_name}: not a readable image ({_reason(e)})") from None
    if w <= 0 or h <= 0:
        raise BadImageError(f"{file_name}: image header gives an empty size {w}x{h}")
    return h, w


def _reason(error: Exception) -> str:
    """Pillow's message, without the file object's repr it names an unknown format by."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "not a format Pillow reads"
    return str(error)


def _truncation_problem(buf: bytes) -> str:
    """A description of why ``buf`` looks cut short, or "" (cheap: looks at the tail only)."""
    if buf.startswith(_JPEG_SOI):
        # Some writers pad after the end-of-image marker; allow a little.
        if buf.rfind(_JPEG_EOI, max(0, len(buf) - 64)) < 0:
            return "truncated JPEG (no end-of-image marker)"
    elif buf.startswith(_PNG_SIGNATURE):
        if buf.rfind(b"IEND", max(0, len(buf) - 64)) < 0:
            return "truncated PNG (no IEND chunk)"
    return ""


def _decode_with_pil(
    buf: bytes, file_name: str, image_format, apply_exif: bool, truncated: str = ""
) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(buf)) as im:
            im.load()  # raises on truncated data unless ImageFile.LOAD_TRUNCATED_IMAGES
            if apply_exif:
                im = ImageOps.exif_transpose(im)
            return convert_PIL_to_numpy(im, image_format)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        problem = truncated or "corrupt or unreadable image"
        raise BadImageError(f"{file_name}: {problem} ({_reason(e)})") from None


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_shelf_image(dataset_dict: dict, image_format, reduction: int = 1) -> np.ndarray:
    """
    Read ``dataset_dict["file_name"]`` like ``detectron2.data.detection_utils.read_image``,
    honouring ``dataset_dict.get("apply_exif", True)`` and checking the recorded size.

    Args:
        dataset_dict: a Detectron2 dataset record; "height"/"width", when present, must match
            the decoded image.
        image_format: "BGR", "RGB", or any mode ``read_image`` accepts ("L", "YUV-BT.601", ...).

        reduction: 2, 4 or 8 decodes a JPEG in "BGR" or "RGB" at that fraction of its sides
            (libjpeg's DCT scaling: ceil(H / reduction) x ceil(W / reduction)); other files
            and formats are decoded in full (1).

    Returns:
        (H, W, C) uint8 array (float for "YUV-BT.601"), as ``read_image`` returns.

    Raises:
        BadImageError: the file is missing, truncated, corrupt, or its size disagrees with the
            record; the message names the file and the problem.
    """
    file_name = dataset_dict["file_name"]
    apply_exif = bool(dataset_dict.get("apply_exif", True))
    try:
        with PathManager.open(file_name, "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        raise BadImageError(f"{file_name}: image file is missing") from None
    except OSError as e:
        raise BadImageError(f"{file_name}: cannot read image file ({e})") from None
    if not buf:
        raise BadImageError(f"{file_name}: image file is empty")

    truncated = _truncation_problem(buf)
    if image_format in ("BGR", "RGB") and not truncated:
        # OpenCV's decoder is the fast path; it applies EXIF itself unless told not to.
        if reduction not in (1, 2, 4, 8):
            raise ValueError(f"reduction must be 1, 2, 4 or 8, got {reduction}")
        if reduction > 1 and not buf.startswith(_JPEG_SOI):
            reduction = 1  # OpenCV scales only JPEG while decoding
        flags = _REDUCED_FLAGS.get(reduction, cv2.IMREAD_COLOR)
        if not apply_exif:
            flags |= cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(np.frombuffer(buf, np.uint8), flags)
        if image is None:  # a format OpenCV lacks (GIF) or corrupt data: let PIL tell
            image = _decode_with_pil(buf, file_name, image_format, apply_exif)
            reduction = 1
        elif image_format == "RGB":
            image = image[:, :, ::-1]
    else:
        # PIL raises on data cut short; if it decodes, the "truncation" was trailing junk.
        image = _decode_with_pil(buf, file_name, image_format, apply_exif, truncated)
        reduction = 1

    _check_size(dataset_dict, image, file_name, apply_exif, reduction)
    return image


def _check_size(
    dataset_dict: dict, image: np.ndarray, file_name: str, apply_exif: bool, reduction: int = 1
):
    if "height" not in dataset_dict or "width" not in dataset_dict:
        return
    h, w = image.shape[:2]
    exp_h, exp_w = int(dataset_dict["height"]), int(dataset_dict["width"])
    if reduction > 1:
        exp_h, exp_w = -(-exp_h // reduction), -(-exp_w // reduction)
    if (h, w) == (exp_h, exp_w):
        return
    msg = (
        f"{file_name}: image size disagrees with its annotations: the file decodes to "
        f"{w}x{h} (WxH, EXIF orientation {'applied' if apply_exif else 'ignored'}), "
        f"the annotations record {exp_w}x{exp_h}"
    )
    if (h, w) == (exp_w, exp_h):
        msg += (
            "; height and width are swapped, which is what a stale or missing EXIF "
            "orientation tag does: check the record's 'apply_exif'"
        )
    raise BadImageError(msg)
