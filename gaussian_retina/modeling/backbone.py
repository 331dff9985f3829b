from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

__all__ = ["BottomUpFPN", "build_gaussian_retinanet_resnet_fpn_backbone"]


class BottomUpFPN(FPN):
    """
    An FPN that returns the bottom-up features it was built on (e.g. "res2".."res5") next to its
    own outputs ("p3".."p7"), so one backbone pass feeds both the RetinaNet head and the Gaussian
    branch. Parameters and state-dict keys are FPN's own, so RetinaNet checkpoints load as they are.
    """

    def forward(self, x):
        """
        Returns:
            dict[str->Tensor]: FPN's outputs plus the bottom-up network's outputs.
        """
        # FPN.forward keeps the bottom-up features to itself; catch them on the way instead of
        # running the bottom-up network twice.
        bottom_up_features = {}
        handle = self.bottom_up.register_forward_hook(
            lambda module, inputs, outputs: bottom_up_features.update(outputs)
        )
        try:
            results = super().forward(x)
        finally:
            handle.remove()
        results.update(bottom_up_features)
        return results

    def output_shape(self):
        shapes = dict(self.bottom_up.output_shape())
        shapes.update(super().output_shape())
        return shapes


@BACKBONE_REGISTRY.register()
def build_gaussian_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    RetinaNet's ResNet-FPN backbone (P3-P7) that also returns MODEL.RESNETS.OUT_FEATURES.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_channels_p6p7 = bottom_up.output_shape()["res5"].channels
    return BottomUpFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels_p6p7, cfg.MODEL.FPN.OUT_CHANNELS),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
