import math

import torch
from detectron2.modeling import build_model
from detectron2.layers import batched_nms

from common import get_config, inference_arguments
from gaussian_retina.modeling import soft_nms, vote_boxes


def _boxes():
    return torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # the best
            [0.0, 0.0, 10.0, 12.0],  # IoU 100 / 120 with it
            [30.0, 0.0, 40.0, 10.0],  # apart
            [0.0, 0.0, 10.0, 10.0],  # a copy of the best, in another class
        ]
    )


def test_each_kept_box_lowers_the_others_by_a_gaussian_of_their_iou():
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    classes = torch.tensor([0, 0, 0, 1])
    keep, kept = soft_nms(_boxes(), scores, classes, 0.5, 0.05, 300)
    decayed = 0.8 * math.exp(-((100 / 120) ** 2) / 0.5)  # 0.199: below the apart box and the copy
    assert keep.tolist() == [0, 3, 2, 1]
    torch.testing.assert_close(kept, torch.tensor([0.9, 0.7, 0.5, decayed]))
    # A narrower Gaussian pushes the near-copy lower; the apart box and the other class keep
    # their scores whatever the width.
    _, narrow = soft_nms(_boxes(), scores, classes, 0.1, 0.0, 300)
    assert narrow[-1] < 1e-2 and narrow[:3].tolist() == kept[:3].tolist()


def test_threshold_cap_and_empty_input():
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    classes = torch.tensor([0, 0, 0, 0])
    # All one class: the copy of the best falls to 0.7 * exp(-2) = 0.095, the near-copy to 0.199.
    keep, kept = soft_nms(_boxes(), scores, classes, 0.5, 0.1, 300)
    assert keep.tolist() == [0, 2, 1]
    assert kept.min() >= 0.1
    keep, _ = soft_nms(_boxes(), scores, classes, 0.5, 0.0, 2)
    assert keep.tolist() == [0, 2]
    keep, kept = soft_nms(_boxes()[:0], scores[:0], classes[:0], 0.5, 0.05, 300)
    assert keep.shape == (0,) and keep.dtype == torch.long and kept.shape == (0,)


def test_a_kept_box_is_out_and_classes_never_touch():
    # A near-copy (IoU 0.95) falls below what the kept box itself would decay to if it stayed
    # in: each box is kept once.
    near = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 19.0]])
    keep, kept = soft_nms(near, torch.tensor([0.9, 0.5]), torch.tensor([0, 0]), 0.5, 0.0, 300)
    assert keep.tolist() == [0, 1]
    # A box at exactly the score threshold is kept.
    keep, _ = soft_nms(near, torch.tensor([0.9, 0.5]), torch.tensor([0, 1]), 0.5, 0.5, 300)
    assert keep.tolist() == [0, 1]
    # Classes are moved apart by more than the largest coordinate: a box of class 1 at the origin
    # and one of class 0 at the far corner do not touch, not even by a pixel.
    corners = torch.tensor([[90.0, 90.0, 100.0, 100.0], [0.0, 0.0, 10.0, 10.0]])
    keep, kept = soft_nms(corners, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5, 0.0, 300)
    assert keep.tolist() == [0, 1] and torch.equal(kept, torch.tensor([0.9, 0.8]))


def test_model_uses_soft_nms_then_votes_when_asked():
    torch.manual_seed(0)
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        "0.05",
        "MODEL.RETINANET.VOTE_IOU_THRESH_TEST",
        "0.8",
        "MODEL.RETINANET.SOFT_NMS_SIGMA_TEST",
        "0.5",
    ]
    model = build_model(get_config("synthetic/gln_R18.yaml", *opts)).eval()
    assert model.soft_nms_sigma == 0.5
    args = inference_arguments(model)
    with torch.no_grad():
        ours = model.inference_single_image(*args)
        pred = model._decode_multi_level_predictions(
            *args[:3], model.test_score_thresh, model.test_topk_candidates, args[3]
        )
    keep, decayed = soft_nms(
        pred.pred_boxes.tensor,
        pred.scores,
        pred.pred_classes,
        0.5,
        0.05,
        model.max_detections_per_image,
    )
    voted = vote_boxes(
        pred.pred_boxes.tensor[keep],
        pred.pred_classes[keep],
        pred.pred_boxes.tensor,
        pred.scores,
        pred.pred_classes,
        0.8,
    )
    assert 100 < len(ours) <= model.max_detections_per_image
    torch.testing.assert_close(ours.scores, decayed)
    torch.testing.assert_close(ours.pred_boxes.tensor, voted)
    # The same best box as NMS, but not the same set: it keeps boxes NMS at 0.5 removes.
    hard = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, 0.5)[:300]
    assert keep[0] == hard[0]
    assert set(keep.tolist()) - set(hard.tolist())


def test_overlap_on_both_axes_away_from_the_origin_tiny_and_empty_boxes():
    # Away from the origin, overlapping in x by 6 of 10 and in y by 8 of 10: IoU 48 / 152.
    boxes = torch.tensor([[20.0, 30.0, 30.0, 40.0], [24.0, 32.0, 34.0, 42.0]])
    scores, classes = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    _, kept = soft_nms(boxes, scores, classes, 0.5, 0.0, 300)
    torch.testing.assert_close(kept[1], torch.tensor(0.8 * math.exp(-((48 / 152) ** 2) / 0.5)))
    # Stacked: the same columns, rows apart. No overlap, whatever one axis says.
    stacked = torch.tensor([[20.0, 30.0, 30.0, 40.0], [20.0, 45.0, 30.0, 55.0]])
    _, kept = soft_nms(stacked, scores, classes, 0.5, 0.0, 300)
    assert kept.tolist() == scores.tolist()
    # Boxes of under a pixel overlap like any others: IoU 0.2 / 0.25.
    tiny = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.4]])
    _, kept = soft_nms(tiny, scores, classes, 0.5, 0.0, 300)
    torch.testing.assert_close(kept[1], torch.tensor(0.8 * math.exp(-(0.8**2) / 0.5)))
    # Two empty boxes at one point have no union: no overlap, not an undefined one.
    empty = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]])
    keep, kept = soft_nms(empty, scores, classes, 0.5, 0.0, 300)
    assert keep.tolist() == [0, 1] and kept.tolist() == scores.tolist()
    # Nothing above the threshold: empty indices are still indices.
    keep, kept = soft_nms(boxes, scores, classes, 0.5, 0.95, 300)
    assert keep.dtype == torch.long and keep.shape == (0,) and kept.dtype == scores.dtype
