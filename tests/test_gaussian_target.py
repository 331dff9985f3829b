import math

import cv2
import numpy as np
import pytest

from gaussian_retina.data import GaussianMapRenderer, render_gaussian_map


def _formula(d, sigma=40.0):
    return math.exp(-4 * math.log(2) * d * d / sigma**2)


def test_peak_one_at_box_centre():
    # Box centre (61, 81) in the image is map pixel (30, 40)'s centre at stride 2.
    box = [[41.0, 41.0, 81.0, 121.0]]
    m = render_gaussian_map(box, (200, 160))
    assert m.shape == (100, 80)
    assert np.unravel_index(m.argmax(), m.shape) == (40, 30)
    # The template's pixel centres straddle its exact centre: the peak is G at half a template pixel.
    assert m.max() == pytest.approx(_formula(0.5 * math.sqrt(2)), abs=1e-6)
    assert m.max() > 0.999


def test_half_maximum_lands_where_the_formula_puts_it():
    # 120x120 template, sigma 40: half maximum at sigma/2 = 20 template pixels from the centre,
    # i.e. at 20 * (box side / 120) map pixels after the warp.
    bw, bh = 240.0, 120.0  # image pixels: 120 x 60 map pixels
    m = render_gaussian_map([[0.0, 0.0, bw, bh]], (bh, bw))
    row = m[m.shape[0] // 2]
    col = m[:, m.shape[1] // 2]
    centre_x, centre_y = bw / 4, bh / 4  # map coordinates
    # Pixel j's centre sits at j + 0.5; interpolate the crossing of half the row's maximum.
    xs = np.arange(len(row)) + 0.5
    right = xs[xs > centre_x], row[xs > centre_x]
    half_x = np.interp(-row.max() / 2, -right[1], right[0])
    assert half_x - centre_x == pytest.approx(20 * (bw / 2) / 120, abs=0.05)
    ys = np.arange(len(col)) + 0.5
    below = ys[ys > centre_y], col[ys > centre_y]
    half_y = np.interp(-col.max() / 2, -below[1], below[0])
    assert half_y - centre_y == pytest.approx(20 * (bh / 2) / 120, abs=0.05)


def test_near_zero_at_box_edges_and_zero_outside():
    box = [20.0, 40.0, 140.0, 200.0]
    m = render_gaussian_map([box], (260, 180))
    x0, y0, x1, y1 = (int(v) // 2 for v in box)
    assert m[y0, x0] < 1e-4 and m[y1 - 1, x1 - 1] < 1e-4  # corners
    assert m[(y0 + y1) // 2, x0] < 3e-3 and m[y0, (x0 + x1) // 2] < 3e-3  # mid-edges
    outside = np.ones_like(m, dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.all(m[outside] == 0)


def test_non_square_boxes_stretch_the_map():
    m = render_gaussian_map([[0.0, 0.0, 40.0, 160.0]], (160, 40))  # 20 x 80 map pixels
    above_half = m > 0.5
    rows = np.nonzero(above_half.any(axis=1))[0]
    cols = np.nonzero(above_half.any(axis=0))[0]
    # The half-maximum ellipse spans a third of the box along each side: 80/3 by 20/3.
    assert len(rows) == pytest.approx(80 / 3, abs=1.5)
    assert len(cols) == pytest.approx(20 / 3, abs=1.5)


def test_matches_cv2_warp_perspective_of_the_template():
    renderer = GaussianMapRenderer()
    box = np.array([23.0, 31.0, 101.0, 211.0])
    m = renderer(box[None], (240, 130))
    t = renderer.template_size
    x1, y1, x2, y2 = box / 2
    # Four-point homography in OpenCV's pixel-centre coordinates.
    src = np.float32([[-0.5, -0.5], [t - 0.5, -0.5], [t - 0.5, t - 0.5], [-0.5, t - 0.5]])
    dst = np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) - 0.5
    homography = cv2.getPerspectiveTransform(src, dst)
    ref = cv2.warpPerspective(renderer.template.astype(np.float32), homography, m.shape[::-1])
    # Identical inside the box; on its border OpenCV blends the template's edge (~0.002) with
    # the zeros beyond it, where the renderer keeps only pixels whose centres are inside.
    inside = ref > 0.01
    np.testing.assert_allclose(m[inside], ref[inside], atol=1e-5)
    np.testing.assert_allclose(m, ref, atol=2e-3)


def test_sum_and_max_over_overlapping_boxes():
    boxes = [[0.0, 0.0, 80.0, 80.0], [20.0, 0.0, 100.0, 80.0]]
    one = [render_gaussian_map([b], (80, 100)) for b in boxes]
    summed = render_gaussian_map(boxes, (80, 100), accumulate="sum")
    maxed = render_gaussian_map(boxes, (80, 100), accumulate="max")
    np.testing.assert_allclose(summed, one[0] + one[1], rtol=1e-6)
    np.testing.assert_allclose(maxed, np.maximum(one[0], one[1]), rtol=1e-6)
    assert summed.max() > 1.0 >= maxed.max()
    with pytest.raises(ValueError, match="accumulate"):
        GaussianMapRenderer(accumulate="mean")


def test_degenerate_boxes_are_ignored_and_empty_input_gives_zeros():
    boxes = [[10, 10, 10, 50], [30, 30, 20, 60], [np.nan, 0, 10, 10], [0, 0, 40, 40]]
    m = render_gaussian_map(boxes, (64, 64))
    np.testing.assert_array_equal(m, render_gaussian_map([[0, 0, 40, 40]], (64, 64)))
    assert np.all(render_gaussian_map(np.zeros((0, 4)), (64, 64)) == 0)


def test_boxes_beyond_the_image_are_cut_not_moved():
    inside = render_gaussian_map([[-40.0, -40.0, 40.0, 40.0]], (200, 200))
    full = render_gaussian_map([[0.0, 0.0, 80.0, 80.0]], (200, 200))
    # Same box shifted by 40 px: the part inside the image is the far quadrant of the full one.
    np.testing.assert_allclose(inside[:20, :20], full[20:40, 20:40], atol=1e-6)
    assert inside[20:, :].max() == 0 and inside[:, 20:].max() == 0
    assert render_gaussian_map([[300.0, 300.0, 400.0, 400.0]], (200, 200)).max() == 0
    # The same at the right and bottom edges.
    far = render_gaussian_map([[160.0, 160.0, 240.0, 240.0]], (200, 200))
    np.testing.assert_allclose(far[80:, 80:], full[:20, :20], atol=1e-6)
    assert far[:80, :].max() == 0 and far[:, :80].max() == 0


@pytest.mark.parametrize(
    "box", [[11.0, 0.0, 11.0, 40.0], [0.0, 11.0, 40.0, 11.0], [11.0, 11.0, 11.0, 11.0]]
)
def test_a_box_without_area_on_a_pixel_centre_draws_nothing(box):
    # x = 11 is the centre of map pixel 5 at stride 2: the only place where a box without
    # width or height still holds a pixel centre.
    m = render_gaussian_map([box, [20.0, 20.0, 60.0, 60.0]], (64, 64))
    np.testing.assert_array_equal(m, render_gaussian_map([[20.0, 20.0, 60.0, 60.0]], (64, 64)))


@pytest.mark.parametrize("size", [(101, 77), (1, 1), (3, 640)])
def test_odd_image_sizes_at_stride_2(size):
    h, w = size
    m = render_gaussian_map([[0, 0, w, h]], size)
    assert m.shape == ((h + 1) // 2, (w + 1) // 2)
    assert m.dtype == np.float32


def _cv2_reference(renderer, box, image_size):
    """cv2.warpPerspective of the renderer's template into one box, on the renderer's map."""
    s, t = renderer.stride, renderer.template_size
    shape = (-(-image_size[0] // s), -(-image_size[1] // s))
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64) / s
    src = np.float32([[-0.5, -0.5], [t - 0.5, -0.5], [t - 0.5, t - 0.5], [-0.5, t - 0.5]])
    dst = np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) - 0.5
    homography = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(renderer.template.astype(np.float32), homography, shape[::-1])


@pytest.mark.parametrize("stride, template_size, sigma, box, size", [
    (1, 60, 20.0, [5.0, 7.0, 45.0, 67.0], (80, 50)),
    (4, 31, 9.0, [10.0, 6.0, 150.0, 98.0], (101, 163)),
    (3, 5, 1.5, [0.0, 0.0, 30.0, 24.0], (30, 31)),
])
def test_other_strides_templates_and_widths_match_cv2(stride, template_size, sigma, box, size):
    renderer = GaussianMapRenderer(stride=stride, template_size=template_size, sigma=sigma)
    m = renderer([box], size)
    ref = _cv2_reference(renderer, box, size)
    assert m.shape == ref.shape == (-(-size[0] // stride), -(-size[1] // stride))
    inside = ref > 0.02
    assert inside.sum() > 20
    np.testing.assert_allclose(m[inside], ref[inside], atol=1e-5)
    np.testing.assert_array_equal(m, render_gaussian_map([box], size, stride=stride,
                                                         template_size=template_size, sigma=sigma))


def test_template_is_the_formula_at_pixel_centres():
    renderer = GaussianMapRenderer(template_size=7, sigma=3.0)
    d = np.arange(7) + 0.5 - 3.5
    profile = np.array([_formula(v, 3.0) for v in d])
    np.testing.assert_allclose(renderer.profile, profile, rtol=1e-12)
    np.testing.assert_allclose(renderer.template, np.outer(profile, profile), rtol=1e-12)
    assert renderer.template.shape == (7, 7)
    assert (renderer.stride, renderer.template_size, renderer.sigma) == (2, 7, 3.0)
    assert GaussianMapRenderer().profile.shape == (120,)
    assert GaussianMapRenderer().sigma == 40.0 and GaussianMapRenderer().accumulate == "sum"


@pytest.mark.parametrize("kwargs, shown", [
    ({"stride": 0}, "0, 120, 40.0"),
    ({"template_size": 1}, "2, 1, 40.0"),
    ({"sigma": 0.0}, "2, 120, 0.0"),
    ({"sigma": -1.0}, "2, 120, -1.0"),
])
def test_invalid_renderer_arguments(kwargs, shown):
    with pytest.raises(ValueError) as e:
        GaussianMapRenderer(**kwargs)
    assert str(e.value) == f"need stride >= 1, template_size >= 2, sigma > 0; got {shown}"
    with pytest.raises(ValueError) as e:
        GaussianMapRenderer(accumulate="Sum")
    assert str(e.value) == "accumulate must be 'sum' or 'max', got 'Sum'"
    GaussianMapRenderer(stride=1, template_size=2, sigma=1e-3)  # the smallest allowed


def test_a_box_whose_map_window_is_one_pixel():
    # Map pixel 3 (centre 3.5) is the only centre inside [3.2, 3.8) x [3.2, 3.8) at stride 1.
    renderer = GaussianMapRenderer(stride=1, template_size=4, sigma=2.0)
    m = renderer([[3.2, 3.2, 3.8, 3.8]], (6, 6))
    expected = np.zeros((6, 6), np.float32)
    # Template index of centre 3.5: (3.5 - 3.2) * 4 / 0.6 - 0.5 = 1.5, midway between
    # profile[1] and profile[2], which are equal: G(0.5).
    expected[3, 3] = _formula(0.5, 2.0) ** 2
    np.testing.assert_allclose(m, expected, rtol=1e-6)
    # No centre inside: nothing drawn, though the box has an area.
    assert renderer([[3.6, 3.6, 3.9, 3.9]], (6, 6)).max() == 0


def test_boxes_off_the_map_on_one_axis_draw_nothing_and_leave_the_others():
    box = [8.0, 8.0, 40.0, 40.0]
    alone = render_gaussian_map([box], (48, 48))
    others = [[-30.0, 8.0, -2.0, 40.0], [8.0, 60.0, 40.0, 90.0], [50.0, 50.0, 70.0, 70.0]]
    for accumulate in ("sum", "max"):
        m = render_gaussian_map(others + [box], (48, 48), accumulate=accumulate)
        np.testing.assert_array_equal(m, alone)
    empty = render_gaussian_map(others, (48, 48))
    assert empty.shape == (24, 24) and empty.dtype == np.float32 and empty.max() == 0
