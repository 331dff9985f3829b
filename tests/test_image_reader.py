"""read_shelf_image: formats, EXIF choice, and clear errors for broken images."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data.detection_utils import read_image
from PIL import Image
from PIL.PngImagePlugin import PngInfo

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
    with pytest.raises(BadImageError, match=r"junk\.jpg: corrupt or unreadable image") as e:
        read_shelf_image({"file_name": str(junk)}, "BGR")
    # Pillow names an unknown format by its file object's repr, which tells the user nothing.
    assert str(e.value).endswith("(not a format Pillow reads)") and " at 0x" not in str(e.value)

    full = tmp_path / "full.jpg"
    Image.fromarray(_pattern(480, 640)).save(full, quality=95)
    data = full.read_bytes()
    for name, cut in (("half.jpg", data[: len(data) // 2]), ("cut.png", png.read_bytes()[:-30])):
        (tmp_path / name).write_bytes(cut)
        for fmt in ("BGR", "RGB", "L"):
            with pytest.raises(BadImageError, match=rf"{name}: truncated"):
                read_shelf_image({"file_name": str(tmp_path / name)}, fmt)
    with pytest.raises(BadImageError, match=r"junk\.jpg: not a readable image \(not a format"):
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


def test_exif_orientation_of_absent_zero_and_unreadable_tags(tmp_path):
    from gaussian_retina.data.image_reader import exif_orientation

    with Image.open(_jpeg_with_orientation(tmp_path / "six.jpg", 6)) as im:
        assert exif_orientation(im) == 6
    with Image.open(_jpeg_with_orientation(tmp_path / "zero.jpg", 0)) as im:
        assert exif_orientation(im) == 1
    Image.fromarray(_pattern()).save(tmp_path / "plain.jpg")
    with Image.open(tmp_path / "plain.jpg") as im:
        assert exif_orientation(im) == 1

    class Broken:
        def getexif(self):
            raise SyntaxError("bad EXIF block")

    assert exif_orientation(Broken()) == 1


@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_reduced_jpeg_decoding_and_its_size_check(tmp_path, reduction):
    path = tmp_path / "big.jpg"
    Image.fromarray(_pattern(50, 70)).save(path, quality=95)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[reduction]
    reference = cv2.imread(str(path), flags)
    assert reference.shape[:2] == (-(-50 // reduction), -(-70 // reduction))
    d = {"file_name": str(path), "height": 50, "width": 70}
    np.testing.assert_array_equal(read_shelf_image(d, "BGR", reduction), reference)
    np.testing.assert_array_equal(read_shelf_image(d, "RGB", reduction), reference[:, :, ::-1])
    # Only JPEG in BGR or RGB is reduced; the record's size is checked at full size otherwise.
    assert read_shelf_image(d, "L", reduction).shape == (50, 70, 1)
    png = tmp_path / "big.png"
    Image.fromarray(_pattern(50, 70)).save(png)
    assert read_shelf_image({**d, "file_name": str(png)}, "BGR", reduction).shape == (50, 70, 3)
    if reduction > 1:
        with pytest.raises(BadImageError, match=r"decodes to .* the annotations record "
                                                rf"{-(-78 // reduction)}x{-(-50 // reduction)}"):
            read_shelf_image({**d, "width": 78}, "BGR", reduction)


def test_reduced_decoding_follows_the_exif_choice(tmp_path):
    path = str(_jpeg_with_orientation(tmp_path / "turned.jpg", 6))
    stored = read_shelf_image({"file_name": path, "apply_exif": False}, "BGR", 2)
    assert stored.shape == (24, 32, 3)
    np.testing.assert_array_equal(
        stored, cv2.imread(path, cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION))
    turned = read_shelf_image({"file_name": path, "height": 64, "width": 48}, "BGR", 2)
    assert turned.shape == (32, 24, 3)
    with pytest.raises(BadImageError, match=r"16x12 \(WxH, EXIF orientation ignored\), the "
                                            r"annotations record 12x16; height and width are "
                                            r"swapped"):
        read_shelf_image({"file_name": path, "apply_exif": False, "height": 64, "width": 48},
                         "BGR", 4)


def test_a_reduction_other_than_a_power_of_two_up_to_8_is_refused(png):
    for reduction in (0, 3, 16):
        with pytest.raises(ValueError, match=f"^reduction must be 1, 2, 4 or 8, got {reduction}$"):
            read_shelf_image({"file_name": str(png)}, "BGR", reduction)


def test_a_format_opencv_lacks_is_decoded_by_pil(tmp_path):
    path = tmp_path / "shelf.tga"
    Image.fromarray(_pattern()).save(path)
    assert cv2.imread(str(path)) is None
    expected = np.asarray(Image.open(path).convert("RGB"))
    d = {"file_name": str(path), "height": 48, "width": 64}
    np.testing.assert_array_equal(read_shelf_image(d, "RGB"), expected)
    # Decoded in full whatever reduction was asked, and checked against the record at full size.
    np.testing.assert_array_equal(read_shelf_image(d, "BGR", 4), expected[:, :, ::-1])
    with pytest.raises(BadImageError, match="the file decodes to 64x48 .* record 64x50"):
        read_shelf_image({**d, "height": 50}, "BGR", 2)


@pytest.mark.parametrize(
    "name, marker, message",
    [
        ("cut.jpg", b"\xff\xd9", r"truncated JPEG \(no end-of-image marker\)"),
        ("cut.png", b"IEND", r"truncated PNG \(no IEND chunk\)"),
    ],
)
def test_a_cut_file_is_found_though_its_end_marker_comes_earlier(tmp_path, name, marker, message):
    # An end marker inside the file (a JPEG comment, or an EXIF thumbnail, ends with one; a PNG's
    # text may hold "IEND") does not make a file cut short whole: only its tail is looked at.
    path = tmp_path / name
    if name.endswith(".jpg"):
        Image.fromarray(_pattern(240, 320)).save(path, quality=95, comment=marker * 4)
    else:
        info = PngInfo()
        info.add_text("note", marker.decode() * 4)
        Image.fromarray(_pattern(240, 320)).save(path, pnginfo=info)
    data = path.read_bytes()
    assert data.find(marker) < len(data) // 2
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=rf"{name.replace('.', '[.]')}: {message}"):
        read_image_size(str(path), check_complete=True)
    with pytest.raises(BadImageError, match=rf"{name.replace('.', '[.]')}: {message}"):
        read_shelf_image({"file_name": str(path)}, "BGR")


def test_the_pil_fallback_keeps_the_exif_choice(tmp_path, monkeypatch):
    # A photo OpenCV cannot decode goes to PIL, which must orient it as asked, too.
    path = str(_jpeg_with_orientation(tmp_path / "turned.jpg", 6))
    expected_turned = read_shelf_image({"file_name": path}, "BGR")
    expected_stored = read_shelf_image({"file_name": path, "apply_exif": False}, "BGR")
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    turned = read_shelf_image({"file_name": path, "height": 64, "width": 48}, "BGR")
    stored = read_shelf_image({"file_name": path, "apply_exif": False}, "BGR")
    assert turned.shape == (64, 48, 3) and stored.shape == (48, 64, 3)
    # PIL's and OpenCV's JPEG decoders may differ by a grey level or two.
    assert np.abs(turned.astype(int) - expected_turned).max() <= 3
    assert np.abs(stored.astype(int) - expected_stored).max() <= 3


def test_the_end_marker_is_looked_for_in_the_last_64_bytes(tmp_path):
    # Within them, the fast reduced decoding; past them, the file is decoded in full by PIL,
    # which reads padding after a complete image as such.
    path = tmp_path / "padded.jpg"
    Image.fromarray(_pattern(50, 70)).save(path, quality=95)
    data = path.read_bytes()
    for pad, shape in ((62, (25, 35, 3)), (63, (50, 70, 3))):
        path.write_bytes(data + b"\0" * pad)
        assert read_shelf_image({"file_name": str(path)}, "BGR", 2).shape == shape
        assert read_image_size(str(path), check_complete=True) == (50, 70)


@pytest.mark.parametrize("hw", [(1, 3), (3, 1), (1, 1)])
def test_a_one_pixel_side_is_a_size(tmp_path, hw):
    path = tmp_path / "thin.png"
    Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(path)
    assert read_image_size(str(path), check_complete=True) == hw
    assert read_shelf_image({"file_name": str(path), "height": hw[0], "width": hw[1]},
                            "BGR").shape == (*hw, 3)


def test_the_size_message_names_the_exif_choice(png):
    with pytest.raises(BadImageError) as e:
        read_shelf_image({"file_name": str(png), "height": 40, "width": 64, "apply_exif": False},
                         "RGB")
    assert str(e.value) == (
        f"{png}: image size disagrees with its annotations: the file decodes to 64x48 (WxH, "
        "EXIF orientation ignored), the annotations record 64x40")
    with pytest.raises(BadImageError) as e:
        read_shelf_image({"file_name": str(png), "height": 64, "width": 48}, "L")
    assert str(e.value) == (
        f"{png}: image size disagrees with its annotations: the file decodes to 64x48 (WxH, "
        "EXIF orientation applied), the annotations record 48x64; height and width are "
        "swapped, which is what a stale or missing EXIF orientation tag does: check the "
        "record's 'apply_exif'")
    # Only a record with both sides is checked.
    assert read_shelf_image({"file_name": str(png), "height": 5}, "BGR").shape == (48, 64, 3)
    assert read_shelf_image({"file_name": str(png), "width": 5}, "BGR").shape == (48, 64, 3)


def test_unreadable_paths(tmp_path):
    with pytest.raises(BadImageError, match=r"^.*folder: cannot read image file \("):
        (tmp_path / "folder").mkdir()
        read_shelf_image({"file_name": str(tmp_path / "folder")}, "BGR")
    with pytest.raises(BadImageError, match=r"^.*nope\.png: image file is missing$"):
        read_image_size(str(tmp_path / "nope.png"))


def test_read_image_size_checks_completeness_only_when_asked(tmp_path, png):
    full = tmp_path / "full.jpg"
    Image.fromarray(_pattern(480, 640)).save(full, quality=95)
    data = full.read_bytes()
    cut_jpeg, cut_png = tmp_path / "cut.jpg", tmp_path / "cut.png"
    cut_jpeg.write_bytes(data[: len(data) // 2])
    cut_png.write_bytes(png.read_bytes()[:-30])
    assert read_image_size(str(cut_jpeg)) == (480, 640)
    assert read_image_size(str(cut_png)) == (48, 64)
    with pytest.raises(BadImageError, match=r"cut\.jpg: truncated JPEG \(no end-of-image marker\)"):
        read_image_size(str(cut_jpeg), check_complete=True)
    with pytest.raises(BadImageError, match=r"cut\.png: truncated PNG \(no IEND chunk\)"):
        read_image_size(str(cut_png), check_complete=True)
    # Padding after the end marker, short or long, is not a cut.
    for pad in (b"\0" * 10, b"\0" * 500):
        padded = tmp_path / f"padded{len(pad)}.jpg"
        padded.write_bytes(data + pad)
        assert read_image_size(str(padded), check_complete=True) == (480, 640)
        padded_png = tmp_path / f"padded{len(pad)}.png"
        padded_png.write_bytes(png.read_bytes() + pad)
        assert read_image_size(str(padded_png), check_complete=True) == (48, 64)
    assert read_image_size(str(full), check_complete=True) == (480, 640)
