"""
The Soft-IoU baseline of Goldman et al., "Precise Detection in Densely Packed Scenes" (CVPR 2019):
RetinaNet with an extra head branch that predicts, per anchor, the IoU of its regressed box with
the object it covers, and the EM-Merger (or NMS) to remove duplicates at test time.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.events import get_event_storage

from ..modeling.anchor_matching import ChunkedMatchingRetinaNet
from .em_merger import em_merge

__all__ = ["SoftIoURetinaNet", "SoftIoURetinaNetHead", "soft_iou_targets"]

_MERGERS = ("em", "nms")


class SoftIoURetinaNetHead(RetinaNetHead):
    """
    :class:`RetinaNetHead` plus the Soft-IoU branch: as in the original, its own subnet of
    ``len(conv_dims)`` 3x3 conv + ReLU layers on each FPN level, then a 3x3 conv giving one IoU
    logit per anchor (the sigmoid is applied by the loss and at inference).
    """

    @configurable
    def __init__(
        self, *, input_shape: List[ShapeSpec], conv_dims: List[int], num_anchors, **kwargs
    ):
        """
        Args:
            See :class:`RetinaNetHead`.
        """
        super().__init__(
            input_shape=input_shape, conv_dims=conv_dims, num_anchors=num_anchors, **kwargs
        )
        layers = []
        for in_channels, out_channels in zip(
            [input_shape[0].channels] + list(conv_dims), conv_dims
        ):
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        self.iou_subnet = nn.Sequential(*layers)
        self.iou_pred = nn.Conv2d(conv_dims[-1], num_anchors, 3, padding=1)
        for layer in [*self.iou_subnet, self.iou_pred]:
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    def forward(self, features: List[Tensor]):
        """
        Returns:
            logits, bbox_reg: as :meth:`RetinaNetHead.forward`.
            iou (list[Tensor]): #lvl tensors of shape (N, A, Hi, Wi), IoU logits.
        """
        logits, bbox_reg = super().forward(features)
        iou = [self.iou_pred(self.iou_subnet(f)) for f in features]
        return logits, bbox_reg, iou


@torch.no_grad()
def soft_iou_targets(
    anchors: Tensor,
    pred_deltas: Tensor,
    pred_scores: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    box2box_transform: Box2BoxTransform,
    num_classes: int,
    score_floor: float,
) -> Tuple[Tensor, Tensor]:
    """
    Targets of the Soft-IoU branch: the IoU of each anchor's regressed box with its matched
    ground truth, on positive anchors whose objectness for that ground truth's class exceeds
    ``score_floor`` (as the original, which trains on these anchors only).

    Args:
        anchors: (R, 4) anchors of all levels, XYXY.
        pred_deltas: (N, R, 4) predicted box deltas.
        pred_scores: (N, R, K) predicted objectness, after the sigmoid.
        gt_labels: (N, R) anchor labels in {-1 (ignore), 0..K-1, K (background)}.
        gt_boxes: (N, R, 4) matched ground-truth box of each anchor.

    Returns:
        mask (N, R) bool of the anchors trained, and targets (M,) float, the IoUs of those
        anchors in ``mask.nonzero()`` order (M = mask.sum()).
    """
    pos = (gt_labels >= 0) & (gt_labels != num_classes)
    cls = gt_labels.clamp(0, num_classes - 1)
    score = pred_scores.gather(2, cls.unsqueeze(2)).squeeze(2)
    mask = pos & (score > score_floor)
    anchor_per_pred = anchors.unsqueeze(0).expand(pred_deltas.shape[0], -1, -1)[mask]
    boxes = box2box_transform.apply_deltas(pred_deltas[mask], anchor_per_pred)
    targets = matched_pairwise_iou(Boxes(boxes), Boxes(gt_boxes[mask]))
    return mask, targets.nan_to_num(0.0)


@META_ARCH_REGISTRY.register()
class SoftIoURetinaNet(ChunkedMatchingRetinaNet):
    """
    RetinaNet with the Soft-IoU layer and EM-Merger of Goldman et al. (CVPR 2019).

    Training adds ``loss_iou``; with ``freeze_detector`` only the IoU branch trains and
    ``loss_iou`` is the only loss (the original's second stage). At test time each candidate's
    confidence is ``r * objectness + (1 - r) * soft-IoU``, candidates pass on their objectness
    (> ``test_score_thresh``) and duplicates go by the EM-Merger or NMS. Output instances carry
    ``objectness`` and ``soft_iou`` next to ``scores``.
    """

    @configurable
    def __init__(
        self,
        *,
        iou_loss_weight: float = 1.0,
        iou_score_floor: float = 0.1,
        objectness_weight: float = 0.5,
        merger: str = "em",
        freeze_detector: bool = False,
        em_merger_args: Optional[Dict] = None,
        **kwargs,
    ):
        """
        Args:
            iou_loss_weight: weight of ``loss_iou``.
            iou_score_floor: see :func:`soft_iou_targets`.
            objectness_weight: r of the test-time confidence.
            merger: "em" or "nms".
            freeze_detector: train only the IoU branch.
            em_merger_args: keyword arguments of :func:`em_merge`.
            kwargs: see :class:`RetinaNet`; ``head`` must return IoU logits as its third output.
        """
        super().__init__(**kwargs)
        if merger not in _MERGERS:
            raise ValueError(f"MODEL.SOFT_IOU.MERGER must be one of {_MERGERS}, got {merger!r}")
        self.iou_loss_weight = iou_loss_weight
        self.iou_score_floor = iou_score_floor
        self.objectness_weight = objectness_weight
        self.merger = merger
        self.freeze_detector = freeze_detector
        self.em_merger_args = dict(em_merger_args or {})
        if freeze_detector:
            for module in self._frozen_modules():
                module.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        shapes = ret["backbone"].output_shape()
        ret["head"] = SoftIoURetinaNetHead(
            cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        )
        s, e = cfg.MODEL.SOFT_IOU, cfg.MODEL.EM_MERGER
        ret.update(
            iou_loss_weight=s.LOSS_WEIGHT,
            iou_score_floor=s.SCORE_FLOOR,
            objectness_weight=s.OBJECTNESS_WEIGHT,
            merger=s.MERGER,
            freeze_detector=s.FREEZE_DETECTOR,
            em_merger_args=dict(
                box_shrink=e.BOX_SHRINK,
                heat_threshold=e.HEAT_THRESHOLD,
                max_objects_per_region=e.MAX_OBJECTS_PER_REGION,
                em_max_iter=e.EM_MAX_ITER,
                em_epsilon=e.EM_EPSILON,
                ellipse_prob=e.ELLIPSE_PROB,
                min_box_size=e.MIN_BOX_SIZE,
                nms_thresh=e.NMS_THRESH,
                min_heatmap_box_side=e.MIN_HEATMAP_BOX_SIDE,
            ),
        )
        return ret

    def _frozen_modules(self) -> List[nn.Module]:
        head = [
            m for name, m in self.head.named_children() if name not in ("iou_subnet", "iou_pred")
        ]
        return [self.backbone, *head]

    def train(self, mode: bool = True):
        # Frozen parts stay in eval mode so that their BatchNorm statistics do not drift either.
        super().train(mode)
        if self.freeze_detector and mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas, pred_iou = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_iou)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_iou):
        """
        :meth:`RetinaNet.losses` plus ``loss_iou``; only ``loss_iou`` with ``freeze_detector``.

        Args:
            pred_iou: list of #lvl (N, Hi*Wi*A, 1) IoU logits; the rest as :meth:`RetinaNet.losses`.
        """
        losses = {}
        if not self.freeze_detector:
            losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        mask, targets = soft_iou_targets(
            Boxes.cat(anchors).tensor,
            cat(pred_anchor_deltas, dim=1).detach(),
            cat(pred_logits, dim=1).detach().sigmoid(),
            torch.stack(gt_labels),
            torch.stack(gt_boxes),
            self.box2box_transform,
            self.num_classes,
            self.iou_score_floor,
        )
        num = int(mask.sum())
        get_event_storage().put_scalar("num_iou_anchors", num / len(gt_labels))
        logits = cat(pred_iou, dim=1).squeeze(2)[mask]
        # Mean over the anchors trained, as the original.
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / max(num, 1)
        losses["loss_iou"] = loss * self.iou_loss_weight
        return losses

    def forward_inference(
        self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]
    ):
        pred_logits, pred_anchor_deltas, pred_iou = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        results: List[Instances] = []
        for img_idx, image_size in enumerate(images.image_sizes):
            results.append(
                self.inference_single_image(
                    anchors,
                    [x[img_idx].sigmoid() for x in pred_logits],
                    [x[img_idx] for x in pred_anchor_deltas],
                    image_size,
                    [x[img_idx].sigmoid() for x in pred_iou],
                )
            )
        return results

    def inference_single_image(
        self,
        anchors: List[Boxes],
        box_cls: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
        box_iou: List[Tensor],
    ) -> Instances:
        """
        Args:
            anchors, box_cls, box_delta, image_size: as :meth:`RetinaNet.inference_single_image`.
            box_iou: list of #lvl (Hi*Wi*A, 1) predicted IoUs, after the sigmoid.

        Returns:
            Instances with pred_boxes, scores (the mixed confidence), pred_classes, objectness
            and soft_iou.
        """
        pred = Instances.cat(
            [
                self._decode_level(a, c, d, i, image_size)
                for a, c, d, i in zip(anchors, box_cls, box_delta, box_iou)
            ]
        )
        if self.merger == "nms":
            keep = batched_nms(
                pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh
            )
        else:
            keep = self._em_merge(pred, image_size)
        return pred[keep[: self.max_detections_per_image]]

    def _decode_level(
        self, anchors: Boxes, scores: Tensor, deltas: Tensor, ious: Tensor, image_size
    ):
        """
        Unlike :meth:`DenseDetector._decode_per_level_predictions`, candidates pass on their
        objectness and are ranked by the mixed confidence, as the original.

        Args:
            scores: (Hi*Wi*A, K) objectness; deltas: (Hi*Wi*A, 4); ious: (Hi*Wi*A, 1).
        """
        keep = scores > self.test_score_thresh
        idxs = keep.nonzero()  # (M, 2): anchor, class
        conf = (self.objectness_weight * scores + (1 - self.objectness_weight) * ious)[keep]
        conf, order = conf.topk(min(len(conf), self.test_topk_candidates))
        anchor_idxs, class_idxs = idxs[order].unbind(dim=1)
        boxes = self.box2box_transform.apply_deltas(
            deltas[anchor_idxs], anchors.tensor[anchor_idxs]
        )
        return Instances(
            image_size,
            pred_boxes=Boxes(boxes),
            scores=conf,
            pred_classes=class_idxs,
            objectness=scores[anchor_idxs, class_idxs],
            soft_iou=ious[anchor_idxs, 0],
        )

    def _em_merge(self, pred: Instances, image_size) -> Tensor:
        """EM-Merger per class; returns indices into ``pred``, best score first."""
        keep = []
        for c in pred.pred_classes.unique().tolist():
            idx = (pred.pred_classes == c).nonzero().squeeze(1)
            scores = pred.scores[idx]
            kept = em_merge(
                pred.pred_boxes.tensor[idx],
                scores,
                # The original picks each cluster's representative by the mean of the mixed
                # confidence and the objectness.
                rank_scores=(scores + pred.objectness[idx]) / 2,
                image_size=image_size,
                **self.em_merger_args,
            )
            keep.append(idx[kept])
        if not keep:
            return torch.zeros(0, dtype=torch.int64, device=pred.scores.device)
        keep = torch.cat(keep)
        return keep[pred.scores[keep].argsort(descending=True)]
