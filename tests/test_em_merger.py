import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from gaussian_retina.baselines.em_merger import _prune_nested, em_merge


def _grid(rows, cols, w, h, x0=20.0, y0=20.0):
    """(rows * cols, 4) touching boxes of size w x h, row-major."""
    xs, ys = np.meshgrid(x0 + np.arange(cols) * w, y0 + np.arange(rows) * h)
    xs, ys = xs.ravel(), ys.ravel()
    return np.stack([xs, ys, xs + w, ys + h], axis=1)


def _candidates(objects, per_object, jitter, rng):
    """``per_object`` jittered candidates per object, with scores; also each one's object id."""
    owner = np.repeat(np.arange(len(objects)), per_object)
    boxes = objects[owner] + rng.normal(0, jitter, (len(owner), 4))
    scores = rng.uniform(0.3, 1.0, len(owner))
    return boxes, scores, owner


def test_two_overlapping_boxes_of_one_object_give_one():
    boxes = np.array([[100.0, 100.0, 160.0, 180.0], [103.0, 98.0, 162.0, 183.0]])
    keep = em_merge(boxes, np.array([0.6, 0.9]))
    assert keep.tolist() == [1]


def test_representative_is_the_best_ranked_not_the_best_scored():
    boxes = np.array([[100.0, 100.0, 160.0, 180.0], [103.0, 98.0, 162.0, 183.0]])
    keep = em_merge(boxes, np.array([0.6, 0.9]), rank_scores=np.array([0.95, 0.5]))
    assert keep.tolist() == [0]


def test_two_adjacent_objects_give_two():
    # Each object forms a region with one detection and k = 1, the case (n == k) that the
    # original merger dropped.
    boxes = np.array([[100.0, 100.0, 160.0, 180.0], [160.0, 100.0, 220.0, 180.0]])
    keep = em_merge(boxes, np.array([0.9, 0.8]))
    assert sorted(keep.tolist()) == [0, 1]
    assert keep.tolist()[0] == 0  # best score first


def test_one_box_is_kept():
    assert em_merge(np.array([[10.0, 20.0, 60.0, 90.0]]), np.array([0.3])).tolist() == [0]


def test_no_boxes():
    keep = em_merge(np.zeros((0, 4)), np.zeros(0))
    assert isinstance(keep, np.ndarray) and keep.shape == (0,)
    keep = em_merge(torch.zeros(0, 4), torch.zeros(0))
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.int64 and keep.numel() == 0


def test_dense_grid_of_lookalikes_keeps_its_count():
    rng = np.random.default_rng(0)
    objects = _grid(8, 12, 40.0, 56.0)
    boxes, scores, owner = _candidates(objects, 6, 2.0, rng)
    keep = em_merge(boxes, scores, image_size=(520, 540))
    assert len(keep) == len(objects)
    # One kept box per object, each on its object.
    assert sorted(owner[keep].tolist()) == list(range(len(objects)))
    iou = box_iou(torch.as_tensor(boxes[keep]), torch.as_tensor(objects[owner[keep]])).diagonal()
    assert (iou > 0.7).all()


def test_each_object_keeps_its_best_ranked_candidate():
    rng = np.random.default_rng(1)
    objects = _grid(3, 5, 50.0, 70.0)
    boxes, scores, owner = _candidates(objects, 5, 2.0, rng)
    keep = em_merge(boxes, scores)
    for k in keep.tolist():
        group = np.nonzero(owner == owner[k])[0]
        assert k == group[np.argmax(scores[group])]


def test_torch_in_torch_out_and_same_result_as_numpy():
    rng = np.random.default_rng(2)
    boxes, scores, _ = _candidates(_grid(2, 4, 48.0, 64.0), 4, 2.0, rng)
    keep_np = em_merge(boxes, scores)
    keep_t = em_merge(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores))
    assert isinstance(keep_t, torch.Tensor)
    assert keep_t.tolist() == keep_np.tolist()


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        em_merge(np.zeros((2, 4)), np.zeros(3))


def test_stray_boxes_bridging_neighbours_cost_no_object_its_box():
    # A row of six objects, each with six candidates, plus a weak candidate straddling each pair
    # of neighbours: the bridges join all of them into one heat-map region, so the count comes
    # from the region's area and the EM, not from the regions.
    rng = np.random.default_rng(0)
    objects = _grid(1, 6, 40.0, 56.0)
    boxes, scores, owner = _candidates(objects, 6, 3.0, rng)
    bridges = (objects[:-1] + objects[1:]) / 2
    boxes = np.concatenate([boxes, bridges])
    scores = np.concatenate([scores, np.full(len(bridges), 0.3)])
    keep = em_merge(boxes, scores)
    assert len(keep) == len(objects)
    assert (keep < len(owner)).all()  # no bridge survives
    assert sorted(owner[keep].tolist()) == list(range(len(objects)))


def _cov(*sigmas):
    return np.stack([np.diag([s * s, s * s]) for s in sigmas]).astype(np.float64)


def test_of_two_nested_clusters_the_cooler_centre_is_pruned():
    # Cluster 0 (sigma 10) at (50, 50) and cluster 1 (sigma 5) at (53, 50): each mean is inside
    # the other's 50 % ellipse. Cluster 2 is far away, cluster 3 sits on cluster 0's mean but in
    # another region: neither is nested with anything of its own region.
    mu = np.array([[50.0, 50.0], [53.0, 50.0], [150.0, 50.0], [51.0, 50.0]])
    cov = _cov(10, 5, 10, 10)
    region = np.array([0, 0, 0, 1])
    heat = np.zeros((50, 100))
    heat[25, 25] = 1.0  # (50, 50) at stride 2
    heat[25, 26] = 0.5  # (53, 50)
    heat[25, 75] = 0.2
    keep = _prune_nested(mu, cov, region, heat, 2, 0.5)
    assert keep.tolist() == [True, False, True, True]
    # The heat map decides, not the order: make cluster 1 the hotter one.
    heat[25, 26] = 2.0
    assert _prune_nested(mu, cov, region, heat, 2, 0.5).tolist() == [False, True, True, True]


def test_nesting_is_the_chi_square_ellipse_of_either_cluster():
    # The 50 % ellipse of a 2-D Gaussian is a Mahalanobis distance of sqrt(-2 ln 0.5) = 1.177
    # sigmas. A tight cluster (sigma 1) at 1.15 or 1.20 sigmas of a wide one (sigma 10): nested
    # through the wide one's ellipse only, and only at 1.15.
    heat = np.ones((100, 100))
    heat[50, 50] = 2.0  # the wide cluster is hotter
    for offset, nested in [(11.5, True), (12.0, False)]:
        mu = np.array([[50.0, 50.0], [50.0, 50.0 + offset]])
        keep = _prune_nested(mu, _cov(10, 1), np.array([0, 0]), heat, 1, 0.5)
        assert keep.tolist() == [True, not nested], offset
    # A larger ellipse_prob takes in more: at 0.9 the ellipse reaches 2.15 sigmas.
    mu = np.array([[50.0, 50.0], [50.0, 71.0]])
    assert _prune_nested(mu, _cov(10, 1), np.array([0, 0]), heat, 1, 0.9).tolist() == [True, False]
    assert _prune_nested(mu, _cov(10, 1), np.array([0, 0]), heat, 1, 0.5).tolist() == [True, True]


def test_a_chain_of_nested_pairs_is_pruned_greedily():
    # 0 ~ 1 and 1 ~ 2 are nested, 0 and 2 are not. Cluster 1 is the coolest: it goes with the
    # first pair, after which 0 and 2 both stay.
    mu = np.array([[10.0, 10.0], [18.0, 10.0], [26.0, 10.0]])
    heat = np.zeros((20, 40))
    heat[10, 10], heat[10, 18], heat[10, 26] = 1.0, 0.5, 0.9
    keep = _prune_nested(mu, _cov(8, 8, 8), np.array([0, 0, 0]), heat, 1, 0.5)
    assert keep.tolist() == [True, False, True]
    # Cluster 1 the hottest: it prunes 0, then 2.
    heat[10, 18] = 3.0
    keep = _prune_nested(mu, _cov(8, 8, 8), np.array([0, 0, 0]), heat, 1, 0.5)
    assert keep.tolist() == [False, True, False]
