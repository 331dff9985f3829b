"""The benchmarks' synthetic inputs: SKU-110K-like rows of touching boxes."""

import numpy as np
import pytest

from benchmark_harness import sku110k_boxes


@pytest.mark.parametrize("num", [0, 1, 150, 1000])
def test_sku110k_boxes_fill_the_image_in_rows_of_touching_products(num):
    boxes = sku110k_boxes(np.random.default_rng(0), num, 800, 1333)
    assert boxes.shape == (num, 4) and boxes.dtype == np.float32
    if num == 0:
        return
    assert (
        (boxes[:, :2] >= 0).all()
        and (boxes[:, 2] <= 1333 + 1e-3).all()
        and (boxes[:, 3] <= 800).all()
    )
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    # Neighbours in a row share an edge; rows stand on the same shelf line.
    same_row = boxes[1:, 3] == boxes[:-1, 3]
    np.testing.assert_allclose(boxes[1:, 0][same_row], boxes[:-1, 2][same_row], rtol=1e-5)
    if num == 150:  # about SKU-110K's product size at 800x1333
        assert 40 < np.median(boxes[:, 2] - boxes[:, 0]) < 90
        assert 70 < np.median(boxes[:, 3] - boxes[:, 1]) < 130
