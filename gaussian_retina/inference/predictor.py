"""
A batched predictor for whole shelf photographs: tiles (see :mod:`.tiling`), the model's test
resize per tile, batches of tiles through the model, and one merged set of detections, plus the
stitched Gaussian map for models that have the branch.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess

from .tiling import (
    TileGrid,
    auto_tile_grid,
    fixed_tile_grid,
    merge_tile_detections,
    single_pass_scale,
)

__all__ = [
    "DEFAULT_RESCORE_ALPHA",
    "Prediction",
    "ShelfPredictor",
    "forward_with_map",
    "probe_product_side",
    "rescore_by_map",
]

# A product's centre lies on a peak of the map and a false box's centre rarely does: multiplying
# the score by the map there raised AP on synthetic val and on the tobacco photos for every
# checkpoint measured, the square root as much as the plain product (results/inference.md,
# "Rescoring by the map").
DEFAULT_RESCORE_ALPHA = 0.5

# A box edge within this many *input* pixels of a tile's inner edge counts as cut by it: the
# detector's box edges are as precise as its input, whatever the tile's size in the photo.
EDGE_MARGIN_INPUT_PIXELS = 2.0

# "auto" tiling's probe looks at the photo's centre this many times larger than a single pass.
# 3: products too small for a single pass by up to 3x appear at their training scale there, and
# products at the training scale appear 3x larger, still well inside what the model finds.
PROBE_ZOOM = 3.0
# "auto" keeps a photo's single pass, without a probe, when the products it found there are at
# least this fraction of the training scale: a single pass cannot show products much smaller than
# its smallest anchor, so a median above it means the products are resolved, while a probe into a
# photo of products already at or above that scale sees parts of them (results/inference.md).
SINGLE_PASS_TRUSTED = 0.9


@dataclass
class Prediction:
    """One photo's predictions, in the photo's pixels."""

    boxes: np.ndarray  # (N, 4) XYXY
    scores: np.ndarray  # (N,)
    classes: np.ndarray  # (N,) int
    image_size: Tuple[int, int]  # (H, W)
    grid: TileGrid
    gaussian_map: Optional[np.ndarray] = None  # (ceil(H / map_stride), ceil(W / map_stride))
    map_stride: float = 0.0  # photo pixels per map pixel
    # (M,) scores of every merged detection, M >= N, before the photo's detection cap: counts
    # are taken on these, so that a photo of more products than the cap is not undercounted.
    all_scores: Optional[np.ndarray] = None


# GaussianRetinaNet's (and RetinaNet's) test-time attributes, part of a predictor's settings.
MODEL_TEST_OPTIONS = (
    "test_score_thresh", "test_topk_candidates", "test_nms_thresh", "soft_nms_sigma",
    "vote_iou_thresh",
)


class ShelfPredictor:
    """
    Like Detectron2's ``DefaultPredictor``, for lists of large photos:

    * a photo is cut into tiles chosen by ``tiling`` (one tile, the whole photo, when off), each
      seen through the model's test resize;
    * tiles from several photos go through the model ``batch_size`` at a time;
    * the tiles' detections are merged (:func:`merge_tile_detections`) and capped at
      ``max_detections`` per photo; the model's own cap is lifted so that it applies per photo.

    Call it with a list of (H, W, 3) uint8 images in ``input_format``; it returns a list of
    :class:`Prediction`.
    """

    @configurable
    def __init__(
        self,
        *,
        model: torch.nn.Module,
        input_format: str = "BGR",
        test_size: Tuple[int, int] = (800, 1333),
        tiling="auto",
        train_product_side: Optional[float] = None,
        max_detections: int = 300,
        nms_thresh: float = 0.5,
        batch_size: int = 4,
        with_map: bool = True,
        rescore_alpha: Optional[float] = None,
    ):
        """
        Args:
            model: a Detectron2 model in eval mode, weights loaded.
            test_size: (short, long) test input size: each tile is resized by
                ``ResizeShortestEdge(short, long)``, as the model was evaluated.
            tiling: "off", "auto" or (h, w), a tile size in photo pixels (neighbouring tiles then
                overlap by a fifth of a tile). "auto" first runs a single pass, and keeps it
                where its products are near ``train_product_side`` or larger
                (:data:`SINGLE_PASS_TRUSTED`); elsewhere it predicts one tile at the photo's
                centre (the probe, :meth:`probe_window`), and the median size of the products
                found there gives the grid of :func:`auto_tile_grid`: one pass when they are
                near ``train_product_side``, or tiles that bring them to it.
            train_product_side: median product side of the training images in input pixels
                (:func:`~.runner.training_product_side`), for "auto".
            max_detections: detections kept per photo, after the merge.
            nms_thresh: IoU of the NMS between tiles.
            with_map: also return the Gaussian map (models with a ``gaussian_branch``).
            rescore_alpha: if > 0, each detection's score is multiplied by the predicted map at
                its box centre (clipped to [0, 1]) to the power ``rescore_alpha``
                (results/inference.md, "Rescoring by the map"); needs a Gaussian branch. None:
                :data:`DEFAULT_RESCORE_ALPHA` for models with the branch, 0 for others.
        """
        if tiling == "auto" and not train_product_side:
            raise ValueError("tiling 'auto' needs train_product_side (the training scale)")
        self.model = model
        self.input_format = input_format
        self.test_size = (int(test_size[0]), int(test_size[1]))
        self.resize = T.ResizeShortestEdge(self.test_size[0], self.test_size[1])
        self.tiling = tiling
        self.train_product_side = train_product_side
        self.max_detections = max_detections
        self.nms_thresh = nms_thresh
        self.batch_size = max(1, int(batch_size))
        self.has_branch = hasattr(model, "gaussian_branch")
        if rescore_alpha is None:
            rescore_alpha = DEFAULT_RESCORE_ALPHA if self.has_branch else 0.0
        if rescore_alpha > 0 and not self.has_branch:
            raise ValueError("rescoring by the Gaussian map needs a model with a Gaussian branch")
        self.rescore_alpha = float(rescore_alpha)
        # The branch runs whenever its map is used: returned, or rescoring.
        self.return_map = self.has_branch and with_map
        self.with_map = self.return_map or self.rescore_alpha > 0
        if hasattr(model, "max_detections_per_image"):
            # Each tile keeps what its own NMS keeps (up to the top-k candidates); the cap is the
            # photo's, applied after the merge.
            model.max_detections_per_image = max(
                getattr(model, "test_topk_candidates", 1000), max_detections
            )

    @classmethod
    def from_config(cls, cfg, **kwargs):
        model = build_model(cfg)
        model.eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        ret = dict(
            model=model,
            input_format=cfg.INPUT.FORMAT,
            test_size=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
            max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
            nms_thresh=cfg.MODEL.RETINANET.NMS_THRESH_TEST,
        )
        ret.update(kwargs)
        return ret

    def settings(self) -> dict:
        """What its predictions depend on, beside the model's weights (a cache key's part)."""
        return {
            "test_size": list(self.test_size),
            "tiling": self.tiling if isinstance(self.tiling, str) else list(self.tiling),
            "train_product_side": self.train_product_side,
            "max_detections": self.max_detections,
            "nms_thresh": self.nms_thresh,
            "rescore_alpha": self.rescore_alpha,
            "input_format": self.input_format,
            # The model's own test-time options change the scores that a calibration counts.
            "model": {k: getattr(self.model, k, None) for k in MODEL_TEST_OPTIONS},
        }

    def grid_for(self, image_size, product_side: Optional[float] = None) -> TileGrid:
        """The tiles of a photo; for "auto", from its products' side (photo pixels)."""
        H, W = int(image_size[0]), int(image_size[1])
        if self.tiling == "off" or (self.tiling == "auto" and product_side is None):
            return TileGrid((H, W), ((0, 0, W, H),))
        if self.tiling == "auto":
            return auto_tile_grid(
                (H, W),
                input_size=self.test_size,
                product_side=product_side,
                train_product_side=self.train_product_side,
            )
        th, tw = self.tiling
        return fixed_tile_grid((H, W), (th, tw), (th // 5, tw // 5))

    def probe_window(self, image_size) -> Optional[Tuple[int, int, int, int]]:
        """
        The window of "auto"'s probe: the photo's centre, PROBE_ZOOM times smaller than the
        photo (less where that would upsample it), or None for a photo too small to tile.

        A single pass cannot be the probe: on a photo whose products it shrinks below what the
        model resolves, it finds boxes over whole groups of products, and these look large. In
        the zoomed centre the same products appear PROBE_ZOOM times larger, at a size the model
        does resolve whenever tiling would help.
        """
        H, W = int(image_size[0]), int(image_size[1])
        zoom = min(PROBE_ZOOM, 1.0 / single_pass_scale((H, W), self.test_size))
        if zoom < 1.5:
            return None
        h, w = int(math.ceil(H / zoom)), int(math.ceil(W / zoom))
        y0, x0 = (H - h) // 2, (W - w) // 2
        return (x0, y0, x0 + w, y0 + h)

    @torch.no_grad()
    def __call__(self, images: List[np.ndarray]) -> List[Prediction]:
        if self.tiling != "auto":
            return self._predict([self.grid_for(im.shape[:2]) for im in images], images)
        # "auto": the single pass first. Where it already sees the products at about the
        # training scale it is the answer; a probe decides for the others (probe_window).
        singles = self._predict([self.grid_for(im.shape[:2], None) for im in images], images)
        sides = [probe_product_side(pred) for pred in singles]
        probes = [
            (i, self.probe_window(images[i].shape[:2]))
            for i, side in enumerate(sides)
            if side is None
            or side * single_pass_scale(images[i].shape[:2], self.test_size)
            < SINGLE_PASS_TRUSTED * self.train_product_side
        ]
        probes = [(i, win) for i, win in probes if win is not None]
        if not probes:
            return singles
        found = self._predict(
            [TileGrid(images[i].shape[:2], (win,)) for i, win in probes],
            [images[i] for i, _ in probes],
        )
        grids = {i: self.grid_for(images[i].shape[:2], probe_product_side(pred)) for (i, _), pred in zip(probes, found)}
        tiled = [i for i, grid in grids.items() if grid.num_tiles > 1]
        for i, pred in zip(tiled, self._predict([grids[i] for i in tiled], [images[i] for i in tiled])):
            singles[i] = pred
        return singles

    @torch.no_grad()
    def _predict(self, grids: List[TileGrid], images: List[np.ndarray]) -> List[Prediction]:
        jobs = [(i, win) for i, g in enumerate(grids) for win in g.windows]
        # Only tiles of one size share a batch: padding a smaller one to the batch's size would
        # change its result (GroupNorm's statistics, in the FPN and head, include the padding).
        by_size = {}
        for k, (_, (x0, y0, x1, y1)) in enumerate(jobs):
            by_size.setdefault((y1 - y0, x1 - x0), []).append(k)
        tile_out = [None] * len(jobs)
        for ks in by_size.values():
            for start in range(0, len(ks), self.batch_size):
                chunk = ks[start : start + self.batch_size]
                crops = [
                    images[jobs[k][0]][y0:y1, x0:x1]
                    for k in chunk
                    for (x0, y0, x1, y1) in [jobs[k][1]]
                ]
                for k, out in zip(chunk, self._run_tiles(crops)):
                    tile_out[k] = out
        results, k = [], 0
        for grid in grids:
            outs = tile_out[k : k + grid.num_tiles]
            k += grid.num_tiles
            results.append(self._merge(grid, outs))
        return results

    def _run_tiles(self, crops):
        """
        Returns:
            per crop: (Instances in the crop's pixels, map (h', w') or None, the map's stride in
            the crop's pixels, the crop's pixels per input pixel).
        """
        inputs, strides = [], []
        for crop in crops:
            h, w = crop.shape[:2]
            image = self.resize.get_transform(crop).apply_image(crop)
            inputs.append(
                {
                    "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                    "height": h,
                    "width": w,
                }
            )
            strides.append(h / image.shape[0])
        instances, maps = self._forward(inputs)
        s = getattr(self.model, "gaussian_stride", 1)
        return [(r, m, s * f, f) for r, m, f in zip(instances, maps, strides)]

    def _forward(self, inputs):
        return forward_with_map(self.model, inputs, self.with_map)

    def _merge(self, grid: TileGrid, outs) -> Prediction:
        boxes, scores, classes, margins = [], [], [], []
        for inst, gmap, stride, pixels_per_input in outs:
            inst = inst.to("cpu")
            b, sc = inst.pred_boxes.tensor, inst.scores
            if self.rescore_alpha > 0 and gmap is not None:
                sc = rescore_by_map(sc, b, gmap.cpu(), stride, self.rescore_alpha)
            boxes.append(b)
            scores.append(sc)
            classes.append(inst.pred_classes)
            margins.append(EDGE_MARGIN_INPUT_PIXELS * pixels_per_input)
        b, s, c, _ = merge_tile_detections(
            boxes,
            scores,
            classes,
            grid.windows,
            grid.image_size,
            nms_thresh=self.nms_thresh,
            max_detections=None,
            edge_margin=margins,
        )
        n = self.max_detections
        pred = Prediction(
            b[:n].numpy(), s[:n].numpy(), c[:n].numpy(), grid.image_size, grid, all_scores=s.numpy()
        )
        if self.return_map and outs and outs[0][1] is not None:
            pred.gaussian_map, pred.map_stride = stitch_maps(
                [(m.float().cpu().numpy(), st) for _, m, st, _ in outs], grid
            )
        return pred


def probe_product_side(pred: Prediction, min_boxes: int = 5) -> Optional[float]:
    """
    The median side (sqrt of the area, photo pixels) of a prediction's confident boxes: those
    scoring at least half its best score. None when fewer than ``min_boxes`` are confident: the
    photo's products are then not known well enough to tile for them.
    """
    if len(pred.scores) == 0:
        return None
    boxes = pred.boxes[pred.scores >= 0.5 * pred.scores.max()]
    if len(boxes) < min_boxes:
        return None
    return float(np.median(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))))


def forward_with_map(model, inputs, with_map: bool, crop_maps: bool = True):
    """
    A Detectron2 model's detections on ``inputs`` (its list of dicts with "image", "height",
    "width"), and for a dense detector with ``with_map``, its Gaussian map over each input too.

    Args:
        crop_maps: cut each map to its input's size; without, a map keeps the batch's padding
            (a trace would freeze the cut's size; reading the map at box centres never reaches
            the padding).
    Returns:
        (per input: Instances at "height" x "width", map (h', w') at the model's gaussian_stride
        over the resized input or None).
    """
    if not isinstance(model, DenseDetector):
        return [o["instances"] for o in model(inputs)], [None] * len(inputs)
    # DenseDetector.forward's inference path, keeping the backbone's features for the Gaussian
    # branch: GaussianRetinaNet's return_gaussian_map would run the backbone twice.
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    head_features = [features[f] for f in model.head_in_features]
    results = model.forward_inference(images, head_features, model.head(head_features))
    instances = [detector_postprocess(r, x["height"], x["width"]) for r, x in zip(results, inputs)]
    if not with_map:
        return instances, [None] * len(inputs)
    pred_maps = model.gaussian_branch(features)
    if not crop_maps:
        return instances, [m[0] for m in pred_maps]
    s = model.gaussian_stride
    maps = [
        m[0, : math.ceil(h / s), : math.ceil(w / s)]
        for m, (h, w) in zip(pred_maps, images.image_sizes)
    ]
    return instances, maps


# The map's floor in the rescoring: boxes whose centre the map puts at 0 keep their order, by
# their own score, instead of tying at 0 (where which of them a cap keeps would be arbitrary).
RESCORE_MAP_FLOOR = 1e-4


def rescore_by_map(scores, boxes, gaussian_map, stride: float, alpha: float) -> torch.Tensor:
    """
    ``scores`` times the map at each box's centre (:func:`map_at_centres`), at least
    :data:`RESCORE_MAP_FLOOR`, to the ``alpha``.
    """
    return scores * map_at_centres(gaussian_map, boxes, stride).clamp(min=RESCORE_MAP_FLOOR).pow(alpha)


def map_at_centres(gaussian_map: torch.Tensor, boxes: torch.Tensor, stride: float) -> torch.Tensor:
    """
    The map (h', w') at each box's centre, clipped to [0, 1].

    Args:
        boxes: (N, 4) XYXY in the pixels the map covers at ``stride``.
    """
    h, w = gaussian_map.shape[-2:]
    cx = ((boxes[:, 0] + boxes[:, 2]) / (2 * stride)).long().clamp(0, w - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / (2 * stride)).long().clamp(0, h - 1)
    return gaussian_map[cy, cx].clamp(0, 1)


def stitch_maps(tile_maps, grid: TileGrid):
    """
    One map over the photo from its tiles' maps, averaged where tiles overlap.

    Args:
        tile_maps: per tile, ((h', w') map, its stride in photo pixels); all tiles of a grid
            share the stride.
    Returns:
        (ceil(H / S), ceil(W / S)) float32 map and its stride S in photo pixels.
    """
    H, W = grid.image_size
    S = tile_maps[0][1]
    out = np.zeros((math.ceil(H / S), math.ceil(W / S)), np.float32)
    weight = np.zeros_like(out)
    for (m, _), (x0, y0, _, _) in zip(tile_maps, grid.windows):
        oy, ox = int(round(y0 / S)), int(round(x0 / S))
        h, w = min(m.shape[0], out.shape[0] - oy), min(m.shape[1], out.shape[1] - ox)
        out[oy : oy + h, ox : ox + w] += m[:h, :w]
        weight[oy : oy + h, ox : ox + w] += 1
    return out / np.maximum(weight, 1), S
