"""read_shelf_image: formats, EXIF choice, and clear errors for broken images."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data.detection_utils import read_image
from PIL import Image

from gaussian_retina.data.image_reader import BadImageError, read_image_size, read_shelf_image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXIF_STALE = SHARED_DATA / "tobacco_shelves" / "exif_stale" / "images"


def _pattern(h=48, w=64):
    """An image whose every pixel differs, so flips and rotations show."""
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(_pattern()).save(path)
    return path


def _jpeg_with_orientation(path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_pattern()).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_formats_match_detectron2(png):
    rgb = _pattern()
    d = {"file_name": str(png), "height": 48, "width": 64}
    np.testing.assert_array_equal(read_shelf_image(d, "RGB"), rgb)
    np.testing.assert_array_equal(read_shelf_image(d, "BGR"), rgb[:, :, ::-1])
    for fmt in ("L", "YUV-BT.601"):
        np.testing.assert_allclose(read_shelf_image(d, fmt), read_image(str(png), fmt))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_choice(tmp_path, orientation):
    path = str(_jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", orientation))
    raw = read_shelf_image({"file_name": path, "apply_exif": False}, "BGR")
    assert raw.shape == (48, 64, 3)
    stored = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(raw, stored)
    for fmt in ("BGR", "L"):  # the OpenCV path and the PIL path
        applied = read_shelf_image({"file_name": path}, fmt)  # default: as read_image does
        reference = read_image(path, fmt)
        assert applied.shape == reference.shape
        assert np.abs(applied.astype(int) - reference).mean() < 2
    assert read_image_size(path) == (48, 64)
    assert read_image_size(path, apply_exif=True) == ((64, 48) if orientation >= 5 else (48, 64))


def test_missing_empty_corrupt_truncated(tmp_path, png):
    with pytest.raises(BadImageError, match=r"nope\.jpg: image file is missing"):
        read_shelf_image({"file_name": str(tmp_path / "nope.jpg")}, "BGR")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.jpg: image file is empty"):
        read_shelf_image({"file_name": str(empty)}, "BGR")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(BadImageError, match=r"junk\.jpg: corrupt or unreadable image"):
        read_shelf_image({"file_name": str(junk)}, "BGR")

    full = tmp_path / "full.jpg"
    Image.fromarray(_pattern(480, 640)).save(full, quality=95)
    data = full.read_bytes()
    for name, cut in (("half.jpg", data[: len(data) // 2]), ("cut.png", png.read_bytes()[:-30])):
        (tmp_path / name).write_bytes(cut)
        for fmt in ("BGR", "RGB", "L"):
            with pytest.raises(BadImageError, match=rf"{name}: truncated"):
                read_shelf_image({"file_name": str(tmp_path / name)}, fmt)
    with pytest.raises(BadImageError, match=r"junk\.jpg: not a readable image"):
        read_image_size(str(junk))


def test_trailing_bytes_after_end_marker_are_not_truncation(tmp_path):
    path = tmp_path / "padded.jpg"
    Image.fromarray(_pattern()).save(path)
    path.write_bytes(path.read_bytes() + b"\0" * 200)  # some writers pad
    assert read_shelf_image({"file_name": str(path)}, "BGR").shape == (48, 64, 3)


def test_size_disagreeing_with_record(png):
    with pytest.raises(
        BadImageError,
        match=r"img\.png: image size disagrees .* decodes to 64x48 " r".*record 60x48$",
    ):
        read_shelf_image({"file_name": str(png), "height": 48, "width": 60}, "BGR")
    with pytest.raises(BadImageError, match="swapped"):
        read_shelf_image({"file_name": str(png), "height": 64, "width": 48}, "BGR")


@pytest.mark.skipif(not EXIF_STALE.is_dir(), reason=f"real data absent: {EXIF_STALE}")
def test_real_stale_exif_photos_read_as_stored():
    """Their boxes fit the stored pixels: a retail record (apply_exif False) gets those."""
    upside_down = str(EXIF_STALE / "C1_P03_N1_S2_1.JPG")  # orientation 3
    turned = str(EXIF_STALE / "C3_P07_N1_S6_1.JPG")  # orientation 6
    raw = read_shelf_image({"file_name": upside_down, "apply_exif": False}, "BGR")
    d2 = read_image(upside_down, "BGR")  # what Detectron2 would feed the model
    assert raw.shape == d2.shape == (1851, 3264, 3)
    np.testing.assert_array_equal(raw, d2[::-1, ::-1])  # same size, silently rotated in d2
    record = {"file_name": turned, "height": 3192, "width": 2432}
    assert read_shelf_image({**record, "apply_exif": False}, "BGR").shape == (3192, 2432, 3)
    with pytest.raises(BadImageError, match="swapped"):
        read_shelf_image(record, "BGR")  # applying the tag is caught, not silent
