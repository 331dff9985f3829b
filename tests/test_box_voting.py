import torch
from detectron2.modeling import RetinaNet, build_model
from detectron2.structures import pairwise_iou

from common import get_config, inference_arguments
from gaussian_retina.modeling import vote_boxes


def test_each_kept_box_is_the_score_weighted_mean_of_its_voters():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    kept_classes = torch.tensor([0, 0])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # the first kept box
            [0.0, 0.0, 10.0, 12.0],  # IoU 0.83 with it: votes
            [0.0, 0.0, 10.0, 14.0],  # IoU 0.71: does not
            [0.0, 0.0, 10.0, 12.0],  # another class: does not
            [50.0, 50.0, 60.0, 60.0],  # the second kept box, alone
        ]
    )
    scores = torch.tensor([0.9, 0.3, 0.8, 0.8, 0.5])
    classes = torch.tensor([0, 0, 0, 1, 0])
    voted = vote_boxes(kept, kept_classes, boxes, scores, classes, 0.8)
    expected_first = (0.9 * boxes[0] + 0.3 * boxes[1]) / 1.2
    torch.testing.assert_close(voted[0], expected_first)
    torch.testing.assert_close(voted[1], kept[1])
    assert vote_boxes(kept[:0], kept_classes[:0], boxes, scores, classes, 0.8).shape == (0, 4)


def test_voting_edge_cases():
    # One kept box, low scores (their sum under 1), a voter at exactly the threshold's IoU.
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.5]])  # IoU 100 / 125
    scores = torch.tensor([0.3, 0.1])
    classes = torch.tensor([0, 0])
    voted = vote_boxes(kept, classes[:1], boxes, scores, classes, 0.8)
    torch.testing.assert_close(voted[0], (0.3 * boxes[0] + 0.1 * boxes[1]) / 0.4)
    # An empty kept box overlaps nothing, itself included: it stays as it is, not zeroed.
    empty = torch.tensor([[5.0, 5.0, 5.0, 9.0]])
    torch.testing.assert_close(
        vote_boxes(empty, classes[:1], torch.cat([empty, boxes]), torch.tensor([0.5, 0.3, 0.1]),
                   torch.tensor([0, 0, 0]), 0.8),
        empty,
    )


def test_voting_moves_boxes_and_keeps_retinanet_choice():
    torch.manual_seed(0)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]
    model = build_model(
        get_config("synthetic/gln_R18.yaml", *opts, "MODEL.RETINANET.VOTE_IOU_THRESH_TEST", "0.5")
    ).eval()
    args = inference_arguments(model)
    with torch.no_grad():
        ours = model.inference_single_image(*args)
        theirs = RetinaNet.inference_single_image(model, *args)
    # NMS chose the same boxes, in the same order; only their coordinates were voted.
    assert len(ours) > 100
    assert torch.equal(ours.scores, theirs.scores)
    assert torch.equal(ours.pred_classes, theirs.pred_classes)
    iou = pairwise_iou(ours.pred_boxes, theirs.pred_boxes).diagonal()
    assert (iou < 1 - 1e-4).any()
