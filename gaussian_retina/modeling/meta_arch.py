import math

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from .anchor_matching import ChunkedMatchingRetinaNet
from .box_voting import vote_boxes
from .gaussian_branch import build_gaussian_branch
from .gaussian_loss import gaussian_map_loss
from .quality_focal_loss import iou_quality_targets, quality_focal_loss
from .soft_nms import soft_nms

__all__ = ["GaussianRetinaNet"]


@META_ARCH_REGISTRY.register()
class GaussianRetinaNet(ChunkedMatchingRetinaNet):
    """
    RetinaNet with the Gaussian-map branch of "Learning Gaussian Maps for Dense Object Detection"
    (Kant, BMVC 2021). The branch reads the backbone's features, predicts the map of object
    centres at a small stride and adds ``loss_gaussian`` in training. It is not run at test time,
    so inference is RetinaNet's, at RetinaNet's cost, unless ``return_gaussian_map`` asks for the
    map too (for figures).

    Training inputs carry ``"gaussian_map"`` (H/s, W/s) from :class:`GaussianDatasetMapper`.
    """

    @configurable
    def __init__(
        self,
        *,
        gaussian_branch: nn.Module,
        gaussian_stride: int,
        gaussian_loss_weight: float,
        cls_loss_weight: float,
        reg_loss_weight: float,
        pos_thresh: float,
        neg_thresh: float,
        neg_ratio: float,
        min_negatives: int,
        gaussian_loss_normalize: str,
        return_gaussian_map: bool = False,
        vote_iou_thresh: float = 0.0,
        iou_aware_cls: bool = False,
        soft_nms_sigma: float = 0.0,
        **kwargs,
    ):
        """
        The loss arguments have no defaults here: their defaults are the config's
        (:func:`add_gaussian_retina_config`), written once.

        Args:
            gaussian_branch: maps the backbone's output dict to (N, 1, H/s, W/s).
            gaussian_stride: s, the stride of the branch's output.
            gaussian_loss_weight, cls_loss_weight, reg_loss_weight: lambda3, lambda1 and lambda2
                of the paper's eq. 4.
            pos_thresh, neg_thresh, neg_ratio, min_negatives: see :func:`gaussian_map_loss`.
            gaussian_loss_normalize: ``normalize`` of :func:`gaussian_map_loss`.
            return_gaussian_map: in eval mode, also return the predicted map.
            vote_iou_thresh: above 0, each box NMS keeps becomes the score-weighted mean of the
                candidates that overlap it by at least this IoU (:func:`vote_boxes`).
            iou_aware_cls: train the classifier towards the IoU of each positive anchor's own
                box (:func:`quality_focal_loss`) instead of RetinaNet's 0/1 focal loss.
            soft_nms_sigma: above 0, Gaussian Soft-NMS of this width (:func:`soft_nms`) in place
                of NMS at test time; 0: RetinaNet's NMS.
            kwargs: see :class:`ChunkedMatchingRetinaNet` and :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        self.gaussian_branch = gaussian_branch
        self.gaussian_stride = gaussian_stride
        self.gaussian_loss_weight = gaussian_loss_weight
        self.cls_loss_weight = cls_loss_weight
        self.reg_loss_weight = reg_loss_weight
        self.gaussian_loss_args = dict(
            pos_thresh=pos_thresh,
            neg_thresh=neg_thresh,
            neg_ratio=neg_ratio,
            min_negatives=min_negatives,
            normalize=gaussian_loss_normalize,
        )
        self.return_gaussian_map = return_gaussian_map
        self.vote_iou_thresh = vote_iou_thresh
        self.iou_aware_cls = iou_aware_cls
        self.soft_nms_sigma = soft_nms_sigma

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        g = cfg.MODEL.GAUSSIAN
        ret.update(
            gaussian_branch=build_gaussian_branch(cfg, ret["backbone"].output_shape()),
            gaussian_stride=g.OUT_STRIDE,
            gaussian_loss_weight=g.LOSS_WEIGHT,
            cls_loss_weight=cfg.MODEL.RETINANET.CLS_LOSS_WEIGHT,
            reg_loss_weight=cfg.MODEL.RETINANET.REG_LOSS_WEIGHT,
            pos_thresh=g.POS_THRESH,
            neg_thresh=g.NEG_THRESH,
            neg_ratio=g.NEG_RATIO,
            min_negatives=g.MIN_NEGATIVES,
            gaussian_loss_normalize=g.LOSS_NORMALIZE,
            return_gaussian_map=g.RETURN_MAP_AT_TEST,
            vote_iou_thresh=cfg.MODEL.RETINANET.VOTE_IOU_THRESH_TEST,
            iou_aware_cls=cfg.MODEL.RETINANET.IOU_AWARE_CLS,
            soft_nms_sigma=cfg.MODEL.RETINANET.SOFT_NMS_SIGMA_TEST,
        )
        return ret

    def forward(self, batched_inputs):
        """
        As :meth:`RetinaNet.forward`. Training also returns ``loss_gaussian``; in eval mode with
        ``return_gaussian_map`` each output dict also has ``"gaussian_map"``: (1, h/s, w/s), the
        predicted map over the network's input image of size (h, w).
        """
        if not self.training:
            outputs = super().forward(batched_inputs)
            if self.return_gaussian_map:
                # Figures only: the branch needs the backbone features the detector discarded.
                images = self.preprocess_image(batched_inputs)
                pred_maps = self.gaussian_branch(self.backbone(images.tensor))
                for out, pred, (h, w) in zip(outputs, pred_maps, images.image_sizes):
                    s = self.gaussian_stride
                    out["gaussian_map"] = pred[:, : math.ceil(h / s), : math.ceil(w / s)]
            return outputs

        # DenseDetector.forward hands forward_training the head's features only, and the targets
        # are not Instances: this is the one piece of the forward pass taken over.
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        head_features = [features[f] for f in self.head_in_features]
        predictions = self.head(head_features)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        losses = self.forward_training(images, head_features, predictions, gt_instances)
        pred_maps = self.gaussian_branch(features)
        losses["loss_gaussian"] = self.gaussian_loss_weight * self.gaussian_loss(
            pred_maps, batched_inputs
        )
        return losses

    def gaussian_loss(self, pred_maps: torch.Tensor, batched_inputs) -> torch.Tensor:
        """
        Args:
            pred_maps: (N, 1, Hp/s, Wp/s), the branch's output for the padded batch.
            batched_inputs: the mapper's dicts, each with "gaussian_map" (h/s, w/s).
        Returns:
            the unweighted eq. 3 loss.
        """
        # Padded like the images; -1 marks the padding so the loss ignores it.
        targets = ImageList.from_tensors(
            [self._move_to_current_device(x["gaussian_map"])[None] for x in batched_inputs],
            self.backbone.size_divisibility // self.gaussian_stride,
            pad_value=-1.0,
        ).tensor
        if targets.shape[-2:] != pred_maps.shape[-2:]:
            raise ValueError(
                f"Gaussian targets {tuple(targets.shape[-2:])} do not match the predicted map "
                f"{tuple(pred_maps.shape[-2:])}: MODEL.GAUSSIAN.OUT_STRIDE must equal the stride "
                "the dataset mapper rendered with."
            )
        storage = get_event_storage()
        storage.put_scalar(
            "gaussian/pos_pixels", (targets >= self.gaussian_loss_args["pos_thresh"]).sum().item()
            / len(batched_inputs)
        )
        # The loss casts to float32, but inside an autocast region (AMPTrainer) an op it uses could
        # be cast back down (matmul-like ops are): mining and loss run with autocast off.
        with torch.autocast(device_type=pred_maps.device.type, enabled=False):
            return gaussian_map_loss(pred_maps, targets, **self.gaussian_loss_args)

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        # RetinaNet's, with the candidates before NMS kept for box voting.
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        if self.soft_nms_sigma > 0:
            keep, decayed = soft_nms(
                pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.soft_nms_sigma,
                self.test_score_thresh, self.max_detections_per_image,
            )
            kept = pred[keep]
            kept.scores = decayed
        else:
            keep = batched_nms(
                pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh
            )
            kept = pred[keep[: self.max_detections_per_image]]
        if self.vote_iou_thresh > 0:
            kept.pred_boxes.tensor = vote_boxes(
                kept.pred_boxes.tensor,
                kept.pred_classes,
                pred.pred_boxes.tensor,
                pred.scores,
                pred.pred_classes,
                self.vote_iou_thresh,
            )
        return kept

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        # RetinaNet's losses (and its normalizer's update); the IoU-aware classification loss,
        # when asked, takes the focal loss's place with the same normalizer.
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        if self.iou_aware_cls:
            labels = torch.stack(gt_labels)
            targets = iou_quality_targets(
                self.box2box_transform, anchors, pred_anchor_deltas, torch.stack(gt_boxes), labels,
                self.num_classes,
            )
            valid = labels >= 0
            logits = cat(pred_logits, dim=1)[valid]
            losses["loss_cls"] = quality_focal_loss(logits, targets[valid]) / self.loss_normalizer
        losses["loss_cls"] = self.cls_loss_weight * losses["loss_cls"]
        losses["loss_box_reg"] = self.reg_loss_weight * losses["loss_box_reg"]
        return losses
