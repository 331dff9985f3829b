"""
Chunked anchor matching gives Detectron2's labels exactly, low-quality matches and ties included.
"""

import pytest
import torch
from common import get_config
from detectron2.modeling import RetinaNet, build_model
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou

from gaussian_retina.modeling import ChunkedMatchingRetinaNet, match_anchors


def _random_boxes(gen, n, extent=200.0):
    xy = torch.rand(n, 2, generator=gen) * extent
    wh = torch.rand(n, 2, generator=gen) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("low_quality", [True, False])
def test_same_as_detectron2_matcher_on_random_boxes(low_quality):
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    gen = torch.Generator().manual_seed(0)
    for trial in range(8):
        gt = _random_boxes(gen, int(torch.randint(1, 80, (1,), generator=gen)))
        anchors = _random_boxes(gen, 3000)
        # Ties: repeated anchors, anchors equal to a box, and a box no anchor touches (its best
        # IoU is 0, so Detectron2 marks every anchor it does not overlap as positive).
        anchors = torch.cat([anchors, anchors[:40], gt[:3]])
        if trial % 2:
            gt = torch.cat([gt, torch.tensor([[900.0, 900.0, 920.0, 930.0]])])
        gt, anchors = Boxes(gt), Boxes(anchors)
        expected = matcher(pairwise_iou(gt, anchors))
        for max_pairs in (2000, 50000, 10**9, None):
            matches, labels = match_anchors(matcher, gt, anchors, max_pairs)
            assert torch.equal(matches, expected[0]), (trial, max_pairs)
            assert torch.equal(labels, expected[1]), (trial, max_pairs)


@pytest.mark.parametrize("low_quality", [True, False])
def test_same_as_detectron2_matcher_when_no_anchor_fits_or_there_are_no_boxes(low_quality):
    # Anchors far smaller than every box: no IoU reaches the thresholds, so only the low-quality
    # matches (when allowed) make positives. And an image without boxes: all background.
    matcher = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=low_quality)
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(500, 2, generator=gen) * 200
    anchors = Boxes(torch.cat([xy, xy + 4], dim=1))
    for gt in (Boxes(torch.tensor([[10.0, 10.0, 110.0, 110.0], [50.0, 80.0, 190.0, 200.0]])),
               Boxes(torch.zeros(0, 4))):
        expected = matcher(pairwise_iou(gt, anchors))
        for max_pairs in (100, None):
            matches, labels = match_anchors(matcher, gt, anchors, max_pairs)
            assert torch.equal(matches, expected[0]) and torch.equal(labels, expected[1])
    assert (expected[1] == 0).all()


def _shelf_instances(rows, cols, h, w):
    """rows x cols touching boxes filling an h x w image, as on a shelf."""
    ys = torch.linspace(0, h, rows + 1)
    xs = torch.linspace(0, w, cols + 1)
    boxes = torch.tensor(
        [[xs[c], ys[r], xs[c + 1], ys[r + 1] - 3] for r in range(rows) for c in range(cols)]
    )
    return Instances(
        (h, w), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(len(boxes), dtype=torch.long)
    )


@pytest.mark.parametrize("config", ["gln_R18", "goldman_R18"])
def test_label_anchors_equal_retinanets(config):
    model = build_model(get_config(f"synthetic/{config}.yaml"))
    assert isinstance(model, ChunkedMatchingRetinaNet)
    h, w = 192, 256
    features = model.backbone(torch.zeros(1, 3, h, w))
    anchors = model.anchor_generator([features[f] for f in model.head_in_features])
    empty = Instances(
        (h, w), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)
    )
    gts = [_shelf_instances(10, 30, h, w), empty, _shelf_instances(3, 5, h, w)]
    expected = RetinaNet.label_anchors(model, anchors, gts)
    model.max_iou_pairs = 20000  # a few hundred anchors per chunk
    labels, boxes = model.label_anchors(anchors, gts)
    for a, b in zip(labels + boxes, expected[0] + expected[1]):
        assert torch.equal(a, b)
