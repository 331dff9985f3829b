"""
EM-Merger of Goldman et al., "Precise Detection in Densely Packed Scenes" (CVPR 2019): a
replacement for NMS that resolves clusters of overlapping candidate boxes with a mixture of
Gaussians. Pure functions over numpy / torch; no cfg.

The original (``EmMerger.py`` and ``CollapsingMoG.py`` of eg4000/SKU110K_CVPR19) loops over
detections in Python and pandas. This module runs the same steps vectorised:

1. every candidate i becomes a Gaussian over the central half of its box, scaled to its score,
   and the Gaussians are summed into a heat map;
2. the heat map is thresholded at 4/255 of its peak and split into connected regions;
3. per region, k = round(region area / median area of its shrunk boxes), at most 100;
4. hard EM fits k Gaussians to the region's n candidate Gaussians, minimising the
   score-weighted KL divergence, starting from a closest-first agglomerative merge;
5. of two clusters whose means lie inside each other's 50% ellipse, the one whose centre is
   cooler on the heat map is dropped;
6. every cluster gives the box mean +- 2 sigma; each candidate goes to the first such box that
   holds its centre, heaviest cluster first, and the best candidate of each box (by
   ``rank_scores``) is kept;
7. NMS at IoU 0.3 over the kept candidates handles overlaps between regions.

Deviations from the original, each marked ``DEVIATION`` where it happens:

- no time-outs and no Python loop per detection (the only loops are over regions for the
  agglomerative initialisation and over nested cluster pairs for the pruning);
- a region with n <= k candidates still emits boxes (the original emitted none: ``k == n``
  was a no-op and ``n < k`` fell through), by clamping k to n;
- the heat map is rendered at a stride picked so the median shrunk box spans at least
  ``min_heatmap_box_side`` pixels, and each pixel takes the Gaussians' value at its centre;
- a candidate belongs to the connected region under its centre, not to every contour whose
  bounding rectangle holds its centre, and a region's area is its pixel count;
- the agglomerative initialisation merges closest centroids with scipy's ``centroid`` linkage
  (centroids weighted by count, not by score); the initial clusters are then moment-matched
  with the scores, as in the original;
- EM that does not converge within ``em_max_iter`` keeps its last iterate, and EM whose
  objective rises keeps the iterate before the rise (the original fell back to the
  initialisation in both cases);
- clusters claim candidates heaviest first (the original: in cluster index order, lone
  detections first, so one stray box bridging two objects could take both objects' candidates);
- box coordinates stay floating point (the original truncated them to integers).
"""

import math
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch
from scipy.cluster.hierarchy import linkage
from torchvision.ops import nms

__all__ = ["em_merge"]

ArrayLike = Union[np.ndarray, torch.Tensor]

# The Gaussian of a box has sigma = half its side, so the box's corners sit at exp(-1) of the
# peak; the original min-max normalises each kernel, which maps that corner value to 0.
_CORNER = math.exp(-1.0)


def em_merge(
    boxes: ArrayLike,
    scores: ArrayLike,
    rank_scores: Optional[ArrayLike] = None,
    *,
    image_size: Optional[Tuple[int, int]] = None,
    box_shrink: float = 0.5,
    heat_threshold: float = 4.5 / 255,
    max_objects_per_region: int = 100,
    em_max_iter: int = 20,
    em_epsilon: float = 1e-10,
    ellipse_prob: float = 0.5,
    min_box_size: float = 5.0,
    nms_thresh: float = 0.3,
    min_heatmap_box_side: float = 8.0,
) -> ArrayLike:
    """
    Merge duplicate candidate boxes with the EM-Merger; the drop-in counterpart of ``nms``.

    Args:
        boxes: (N, 4) candidate boxes, XYXY absolute pixels.
        scores: (N,) confidences in [0, 1]; they weight the heat map and the EM.
        rank_scores: (N,) scores that pick the representative of each cluster; defaults to
            ``scores``. The original uses the mean of the Soft-IoU-mixed confidence and the
            objectness.
        image_size: (H, W) of the image the boxes live in; defaults to the boxes' extent.
        box_shrink: fraction of each side kept for the heat map (0.5: the central half).
        heat_threshold: heat-map pixels above this fraction of the peak form the regions
            (the original rescales to uint8 and keeps values > 4).
        max_objects_per_region: cap on the estimated number of objects k of a region.
        em_max_iter, em_epsilon: EM stops after this many iterations or when the objective
            falls by no more than epsilon.
        ellipse_prob: probability mass of the ellipse used to find clusters nested in each
            other (0.5: the original's chi-square threshold).
        min_box_size: clusters whose box is not wider and taller than this (pixels) are dropped.
        nms_thresh: IoU threshold of the final NMS between regions.
        min_heatmap_box_side: the heat map's stride is chosen so the median shrunk box spans
            at least this many heat-map pixels on its shorter side.

    Returns:
        indices (K,) int64 of the kept boxes, best score first; a torch tensor on the device of
        ``boxes`` if ``boxes`` is a tensor, else a numpy array.
    """
    as_torch = isinstance(boxes, torch.Tensor)
    device = boxes.device if as_torch else None
    b = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    s = _to_numpy(scores).astype(np.float64).reshape(-1)
    r = s if rank_scores is None else _to_numpy(rank_scores).astype(np.float64).reshape(-1)
    if not (len(b) == len(s) == len(r)):
        raise ValueError(
            f"em_merge: boxes, scores and rank_scores differ in length: {len(b)}, {len(s)}, {len(r)}"
        )
    keep = _em_merge_numpy(
        b,
        s,
        r,
        image_size=image_size,
        box_shrink=box_shrink,
        heat_threshold=heat_threshold,
        max_objects_per_region=max_objects_per_region,
        em_max_iter=em_max_iter,
        em_epsilon=em_epsilon,
        ellipse_prob=ellipse_prob,
        min_box_size=min_box_size,
        nms_thresh=nms_thresh,
        min_heatmap_box_side=min_heatmap_box_side,
    )
    if as_torch:
        return torch.as_tensor(keep, dtype=torch.int64, device=device)
    return keep


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _em_merge_numpy(
    boxes,
    scores,
    rank_scores,
    *,
    image_size,
    box_shrink,
    heat_threshold,
    max_objects_per_region,
    em_max_iter,
    em_epsilon,
    ellipse_prob,
    min_box_size,
    nms_thresh,
    min_heatmap_box_side,
) -> np.ndarray:
    none = np.zeros(0, dtype=np.int64)
    if len(boxes) == 0:
        return none
    if image_size is None:
        image_size = (
            int(math.ceil(max(boxes[:, 3].max(), 1.0))),
            int(math.ceil(max(boxes[:, 2].max(), 1.0))),
        )
    height, width = int(image_size[0]), int(image_size[1])

    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    shrunk_wh = wh * box_shrink
    # sigma = half the shrunk side, as the original; floored so a degenerate box stays a
    # proper Gaussian in the KL divergences.
    sigma = np.maximum(shrunk_wh / 2, 0.5)
    weights = np.clip(scores, 1e-6, None)

    # Steps 1-2: the heat map and its regions.
    # DEVIATION: a coarser heat map where boxes are large; the regions only need the boxes'
    # shape, and the cost of the map is its number of covered pixels.
    stride = max(1, int(np.median(shrunk_wh.min(axis=1)) // min_heatmap_box_side))
    heat = _render_heatmap(centers, shrunk_wh, weights, height, width, stride)
    labels, stats = _heat_regions(heat, heat_threshold)
    num_regions = len(stats)

    # DEVIATION: the region under a detection's centre, instead of every contour whose bounding
    # rectangle holds it. Detections whose centre is cold (< threshold) belong to no region and,
    # as in the original, are dropped.
    cx = np.clip((centers[:, 0] // stride).astype(np.int64), 0, labels.shape[1] - 1)
    cy = np.clip((centers[:, 1] // stride).astype(np.int64), 0, labels.shape[0] - 1)
    det_region = labels[cy, cx] - 1  # -1: background
    valid = det_region >= 0
    if not valid.any():
        return none
    det_idx = np.nonzero(valid)[0]
    det_idx = det_idx[np.argsort(det_region[det_idx], kind="stable")]  # grouped by region
    region = det_region[det_idx]
    n_per_region = np.bincount(region, minlength=num_regions)

    # Step 3: the number of objects per region.
    region_area = stats[:, cv2.CC_STAT_AREA].astype(np.float64) * stride * stride
    k = _objects_per_region(
        shrunk_wh[det_idx].prod(axis=1), n_per_region, region_area, max_objects_per_region
    )

    # Step 4: hard EM per region.
    mu_g, cov_g, mass = _fit_clusters(
        centers[det_idx], sigma[det_idx] ** 2, weights[det_idx], region, n_per_region, k,
        em_max_iter, em_epsilon,
    )

    # Step 5: nested clusters pruned.
    cluster_region = np.repeat(np.arange(num_regions), k)
    keep_cluster = _prune_nested(mu_g, cov_g, cluster_region, heat, stride, ellipse_prob)
    # DEVIATION: clusters claim detections heaviest first (below). The original went in cluster
    # index order, which puts lone detections first, so a stray box bridging two objects could
    # claim both objects' detections and leave one of them without a box.
    order = np.nonzero(keep_cluster)[0]
    order = order[np.argsort(-mass[order], kind="stable")]

    # Steps 6-7: one detection per cluster box, then NMS between regions.
    lo, hi = _cluster_boxes(
        mu_g[order], cov_g[order], stats[cluster_region[order]], stride, min_box_size
    )
    reps = _best_in_each_box(lo, hi, centers, rank_scores)
    if len(reps) == 0:
        return none
    keep = nms(torch.as_tensor(boxes[reps]), torch.as_tensor(scores[reps]), nms_thresh).numpy()
    return reps[keep].astype(np.int64)


def _fit_clusters(mu_t, var_t, weights, region, n_per_region, k, em_max_iter, em_epsilon):
    """
    k[j] Gaussians fitted by hard EM to the n_per_region[j] detections' Gaussians (means
    ``mu_t``, variances ``var_t``) of each region j, the detections grouped by region. Returns
    the clusters' means, covariances and masses (in units of detection scores, comparable across
    regions).
    """
    alpha = weights / np.bincount(region, weights=weights, minlength=len(k))[region]
    cluster_offset = np.concatenate([[0], np.cumsum(k)])
    init = _agglomerative_init(mu_t, region, n_per_region, k, cluster_offset)
    _, mu_g, cov_g = _moments(init, alpha, mu_t, var_t, cluster_offset[-1])
    mu_g, cov_g, assign = _hard_em(
        alpha, mu_t, var_t, region, k, cluster_offset, mu_g, cov_g, em_max_iter, em_epsilon
    )
    return mu_g, cov_g, np.bincount(assign, weights=weights, minlength=len(mu_g))


def _heat_regions(heat: np.ndarray, heat_threshold: float):
    """
    The connected regions of the heat map above ``heat_threshold`` times its peak: a label image
    (0 for background, region i + 1 for region i) and each region's OpenCV stats row.
    """
    peak = heat.max()
    fg = (
        (heat > heat_threshold * peak).astype(np.uint8)
        if peak > 0
        else np.zeros_like(heat, np.uint8)
    )
    _, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    return labels, stats[1:]


def _objects_per_region(shrunk_area, n_per_region, region_area, max_objects_per_region):
    """
    k per region: its area over the median shrunk-box area of its detections (``shrunk_area``,
    grouped by region), between 1 and ``max_objects_per_region``, and at most its detections.
    """
    median_area = _segment_median(shrunk_area, n_per_region)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(median_area > 0, np.round(region_area / median_area), 0)
    k = np.clip(k, 1, max_objects_per_region).astype(np.int64)
    # DEVIATION: the original emitted nothing for a region with n <= k; clamping k to n lets
    # such a region keep one cluster per detection, which the pruning then thins.
    k = np.minimum(k, n_per_region)
    k[n_per_region == 0] = 0
    return k


def _cluster_boxes(mu_g, cov_g, region_stats, stride, min_box_size):
    """
    The box of each cluster, its mean +- 2 sigma clipped to its region's bounding rectangle as
    the original (``region_stats``: the OpenCV stats row of each cluster's region), as (lo, hi)
    corners; boxes not wider and taller than ``min_box_size`` are dropped.
    """
    half = 2 * np.sqrt(np.stack([cov_g[:, 0, 0], cov_g[:, 1, 1]], axis=1))
    left = region_stats[:, cv2.CC_STAT_LEFT] * stride
    top = region_stats[:, cv2.CC_STAT_TOP] * stride
    right = left + region_stats[:, cv2.CC_STAT_WIDTH] * stride
    bottom = top + region_stats[:, cv2.CC_STAT_HEIGHT] * stride
    lo = np.maximum(mu_g - half, np.stack([left, top], 1))
    hi = np.minimum(mu_g + half, np.stack([right, bottom], 1))
    big = ((hi - lo) > min_box_size).all(axis=1)
    return lo[big], hi[big]


def _best_in_each_box(lo, hi, centers, rank_scores) -> np.ndarray:
    """
    Each detection goes to the first box that holds its centre (over all regions, as the
    original), and each box keeps its best-ranked detection: their indices, by box.
    """
    if len(lo) == 0:
        return np.zeros(0, dtype=np.int64)
    inside = (
        (lo[:, None, 0] <= centers[None, :, 0])
        & (centers[None, :, 0] <= hi[:, None, 0])
        & (lo[:, None, 1] <= centers[None, :, 1])
        & (centers[None, :, 1] <= hi[:, None, 1])
    )  # (boxes, N)
    dets = np.nonzero(inside.any(axis=0))[0]
    owner = np.argmax(inside, axis=0)[dets]
    order = np.lexsort((-rank_scores[dets], owner))
    dets, owner = dets[order], owner[order]
    first = np.ones(len(dets), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    return dets[first]


def _render_heatmap(centers, shrunk_wh, weights, height, width, stride) -> np.ndarray:
    """
    Sum of the candidates' Gaussians over their shrunk boxes, each scaled so that its peak is
    its weight and its box corners are 0 (the original's per-kernel min-max normalisation).

    Returns:
        (ceil(H / stride), ceil(W / stride)) float64; pixel (y, x) samples the image at
        ((x + 0.5) * stride, (y + 0.5) * stride).
    """
    hs, ws = -(-height // stride), -(-width // stride)
    lo = centers - shrunk_wh / 2
    hi = centers + shrunk_wh / 2
    # Pixels whose centre lies inside the shrunk box: this keeps the covered area unbiased at
    # any stride.
    x1 = np.clip(np.ceil(lo[:, 0] / stride - 0.5), 0, ws).astype(np.int64)
    x2 = np.clip(np.floor(hi[:, 0] / stride - 0.5) + 1, 0, ws).astype(np.int64)
    y1 = np.clip(np.ceil(lo[:, 1] / stride - 0.5), 0, hs).astype(np.int64)
    y2 = np.clip(np.floor(hi[:, 1] / stride - 0.5) + 1, 0, hs).astype(np.int64)
    bw, bh = np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)
    heat = np.zeros(hs * ws, dtype=np.float64)
    if not (bw * bh).any():
        return heat.reshape(hs, ws)

    # The kernel is separable: 1-D profiles per box column and per box row (sigma = half the
    # side, so each profile falls to exp(-1/2) at the box's edge) ...
    half = np.maximum(shrunk_wh / 2, 1e-6)
    gain = weights / (1 - _CORNER)
    col_box, col = _ragged_ranges(x1, bw)
    row_box, row = _ragged_ranges(y1, bh)
    ex = np.exp(-0.5 * (((col + 0.5) * stride - centers[col_box, 0]) / half[col_box, 0]) ** 2)
    ey = np.exp(-0.5 * (((row + 0.5) * stride - centers[row_box, 1]) / half[row_box, 1]) ** 2)
    ex, ey = ex.astype(np.float32), (ey * gain[row_box]).astype(np.float32)
    # ... and every (box, row) segment spans the box's columns: one entry per covered pixel.
    seg_len = bw[row_box]
    seg, lx = _ragged_ranges(np.zeros(len(row_box), dtype=np.int64), seg_len)
    box = row_box[seg]
    col_start = np.cumsum(bw) - bw
    val = ex[col_start[box] + lx] * ey[seg] - (_CORNER * gain).astype(np.float32)[box]
    heat += np.bincount(row[seg] * ws + x1[box] + lx, weights=val, minlength=hs * ws)
    return heat.reshape(hs, ws)


def _ragged_ranges(start: np.ndarray, length: np.ndarray):
    """
    Concatenated ranges [start_i, start_i + length_i), without a loop.

    Returns:
        owner (sum(length),) int64: the i of each entry; values (sum(length),) int64.
    """
    owner = np.repeat(np.arange(len(length)), length)
    offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return owner, start[owner] + offset


def _segment_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median of each consecutive segment of ``values`` (segment lengths ``counts``; 0 if empty)."""
    out = np.zeros(len(counts), dtype=np.float64)
    seg = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((values, seg))
    v = values[order]
    start = np.cumsum(counts) - counts
    nz = counts > 0
    lo = start[nz] + (counts[nz] - 1) // 2
    hi = start[nz] + counts[nz] // 2
    out[nz] = (v[lo] + v[hi]) / 2
    return out


def _agglomerative_init(mu_t, region, n_per_region, k, cluster_offset) -> np.ndarray:
    """
    Initial cluster of each detection: within each region, the n - k closest-first merges.

    Returns:
        (n,) int64 global cluster index of each detection (regions' clusters are consecutive).
    """
    start = np.cumsum(n_per_region) - n_per_region
    # Regions with k == n or k == 1 need no merging: one cluster per detection, or one for all.
    local = np.arange(len(region)) - start[region]
    init = np.where(k[region] == n_per_region[region], local, 0)
    for c in np.nonzero((k > 1) & (k < n_per_region))[0]:
        n_c, k_c, s_c = int(n_per_region[c]), int(k[c]), int(start[c])
        # DEVIATION: scipy's centroid linkage (count-weighted centroids) replaces the original's
        # score-weighted pairwise merging loop.
        z = linkage(mu_t[s_c : s_c + n_c], method="centroid")
        merges = n_c - k_c
        parent = np.arange(2 * n_c - 1)
        parent[z[:merges, 0].astype(np.int64)] = n_c + np.arange(merges)
        parent[z[:merges, 1].astype(np.int64)] = n_c + np.arange(merges)
        parent[n_c + merges :] = np.arange(n_c + merges, 2 * n_c - 1)
        root = np.arange(n_c)
        while True:  # pointer jumping: depth halves every pass
            nxt = parent[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
            parent = parent[parent]
        init[s_c : s_c + n_c] = np.unique(root, return_inverse=True)[1]
    return (cluster_offset[region] + init).astype(np.int64)


def _moments(assign, alpha, mu_t, var_t, num_clusters):
    """
    Moment-matched mixture of the detections' Gaussians per cluster (the EM's M-step).

    Args:
        assign: (n,) cluster index per detection. alpha: (n,) weights. mu_t: (n, 2) means.
        var_t: (n, 2) diagonal variances.

    Returns:
        beta (K,), mu (K, 2), cov (K, 2, 2); clusters without members get beta 0 and nan moments.
    """
    beta = np.bincount(assign, weights=alpha, minlength=num_clusters)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = (
            np.stack(
                [
                    np.bincount(assign, weights=alpha * mu_t[:, d], minlength=num_clusters)
                    for d in range(2)
                ],
                axis=1,
            )
            / beta[:, None]
        )
        d = mu_t - mu[assign]
        sxx = np.bincount(
            assign, weights=alpha * (var_t[:, 0] + d[:, 0] ** 2), minlength=num_clusters
        )
        syy = np.bincount(
            assign, weights=alpha * (var_t[:, 1] + d[:, 1] ** 2), minlength=num_clusters
        )
        sxy = np.bincount(assign, weights=alpha * d[:, 0] * d[:, 1], minlength=num_clusters)
        cov = np.stack([np.stack([sxx, sxy], 1), np.stack([sxy, syy], 1)], 1) / beta[:, None, None]
    return beta, mu, cov


def _kl_to_clusters(mu_t, var_t, region, k, cluster_offset, mu_g, cov_g):
    """
    KL(f_t || g_j), up to a constant, between each detection and every cluster of its region,
    with the clusters' diagonal variances (as the original).

    Returns:
        (n, max k) float64, inf where a slot is not a cluster of the detection's region.
    """
    kmax = int(k.max())
    slot = np.arange(kmax)
    gid = cluster_offset[region][:, None] + slot[None, :]
    ok = slot[None, :] < k[region][:, None]
    gid = np.where(ok, gid, 0)
    vg = np.stack([cov_g[:, 0, 0], cov_g[:, 1, 1]], 1)[gid]  # (n, kmax, 2)
    d2 = (mu_t[:, None, :] - mu_g[gid]) ** 2
    vt = var_t[:, None, :]
    kl = (0.5 * np.log(vg / vt) + (vt + d2) / (2 * vg)).sum(-1)
    return np.where(ok, kl, np.inf), gid


def _hard_em(alpha, mu_t, var_t, region, k, cluster_offset, mu_g, cov_g, max_iter, epsilon):
    """
    Hard-assignment EM of the original's CollapsingMoG, run on all regions at once; a region
    stops once its objective sum_t alpha_t min_j KL(f_t || g_j) falls by no more than epsilon.

    Returns:
        mu (K, 2), cov (K, 2, 2) of the clusters and the (n,) cluster of each detection.
    """
    num_regions = len(k)
    num_clusters = len(mu_g)
    cluster_region = np.repeat(np.arange(num_regions), k)
    kl, gid = _kl_to_clusters(mu_t, var_t, region, k, cluster_offset, mu_g, cov_g)
    slot = kl.argmin(1)
    assign = gid[np.arange(len(slot)), slot]
    prev = np.full(num_regions, np.inf)
    active = k > 0
    for _ in range(max_iter):
        beta, mu_new, cov_new = _moments(assign, alpha, mu_t, var_t, num_clusters)
        # Clusters that lost all members, and regions already stopped, keep their parameters.
        upd = (beta > 0) & active[cluster_region]
        mu_try = np.where(upd[:, None], mu_new, mu_g)
        cov_try = np.where(upd[:, None, None], cov_new, cov_g)
        kl, gid = _kl_to_clusters(mu_t, var_t, region, k, cluster_offset, mu_try, cov_try)
        slot = kl.argmin(1)
        obj = np.bincount(
            region, weights=alpha * kl[np.arange(len(slot)), slot], minlength=num_regions
        )
        delta = prev - obj
        # DEVIATION: a rise keeps the previous iterate (the original fell back to the init).
        rose = active & (delta < 0)
        accept = active & ~rose
        acc_c = accept[cluster_region]
        mu_g = np.where(acc_c[:, None], mu_try, mu_g)
        cov_g = np.where(acc_c[:, None, None], cov_try, cov_g)
        acc_t = accept[region]
        assign = np.where(acc_t, gid[np.arange(len(slot)), slot], assign)
        prev = np.where(accept, obj, prev)
        active = accept & (delta > epsilon)
        if not active.any():
            break
    return mu_g, cov_g, assign


def _prune_nested(mu_g, cov_g, cluster_region, heat, stride, ellipse_prob) -> np.ndarray:
    """
    Drop one of every two clusters of a region whose means lie inside each other's
    ``ellipse_prob`` ellipse: the one whose centre is cooler on the heat map.

    Returns:
        (K,) bool mask of the clusters kept.
    """
    num = len(mu_g)
    keep = np.ones(num, dtype=bool)
    if num < 2:
        return keep
    # The original tests the centre against the ellipse's polygon; for a 2-D Gaussian that is a
    # Mahalanobis distance against the chi-square quantile, -2 ln(1 - p).
    q = -2.0 * math.log(1.0 - ellipse_prob)
    det = cov_g[:, 0, 0] * cov_g[:, 1, 1] - cov_g[:, 0, 1] ** 2
    det = np.maximum(det, 1e-12)
    inv = (
        np.stack(
            [
                np.stack([cov_g[:, 1, 1], -cov_g[:, 0, 1]], 1),
                np.stack([-cov_g[:, 1, 0], cov_g[:, 0, 0]], 1),
            ],
            1,
        )
        / det[:, None, None]
    )
    d = mu_g[None, :, :] - mu_g[:, None, :]  # d[i, j] = mu_j - mu_i
    m2 = np.einsum("ijk,ikl,ijl->ij", d, inv, d)  # mu_j under cluster i
    nested = (m2 <= q) | (m2.T <= q)
    nested &= cluster_region[:, None] == cluster_region[None, :]
    nested = np.triu(nested, 1)
    ii, jj = np.nonzero(nested)
    if len(ii) == 0:
        return keep
    px = np.clip((mu_g[:, 0] // stride).astype(np.int64), 0, heat.shape[1] - 1)
    py = np.clip((mu_g[:, 1] // stride).astype(np.int64), 0, heat.shape[0] - 1)
    val = heat[py, px]
    # Greedy over the nested pairs in order, as the original: a pair with a dropped member is
    # skipped. The loop is over nested pairs only, usually few.
    for i, j in zip(ii.tolist(), jj.tolist()):
        if keep[i] and keep[j]:
            keep[j if val[j] < val[i] else i] = False
    return keep
