"""
The Trainer that ``train_net.py`` runs: Detectron2's DefaultTrainer with the shelf data loaders, the
paper's evaluator, and multi-process training that also works on machines without a GPU.
"""

import contextlib
import logging
import os

from detectron2.data import (
    DatasetFromList,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..data import GaussianDatasetMapper, ShelfDatasetMapper
from ..evaluation import DenseCOCOEvaluator
from ..modeling import GaussianRetinaNet
from ..shelves import configure_shelf_datasets
from .cpu_speed import TrainingAutocast, to_channels_last, use_cpu_amp
from .model_ema import ModelEMA, ModelEMAHook

__all__ = ["Trainer", "create_ddp_model"]


def create_ddp_model(model, **kwargs):
    """
    Detectron2's :func:`create_ddp_model`, except for a model on the CPU: there (``launch`` with
    the gloo backend) DistributedDataParallel takes no device ids, and Detectron2's version always
    passes the local rank as a GPU id.
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


_d2_create_ddp_model = d2_defaults.create_ddp_model


@contextlib.contextmanager
def _cpu_aware_ddp():
    # DefaultTrainer.__init__ calls create_ddp_model with no way to pass arguments: swap in the
    # CPU-aware version for that call only, instead of copying DefaultTrainer.__init__.
    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = _d2_create_ddp_model


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with the shelf mappers (Gaussian targets for training models with the branch),
    :class:`DenseCOCOEvaluator` (AP, AP50, AP75, AR300, AR300@50 at TEST.DETECTIONS_PER_IMAGE),
    DDP on CPU-only machines, a moving average of the weights when MODEL_EMA asks for one, and
    bfloat16 training on the CPU when SOLVER.CPU_AMP asks for it.
    The Trainer, not the data code, knows which models need the Gaussian targets, so data never
    imports modeling. Every loader and evaluator first gives its shelf datasets the cfg's input
    options (bad-input policy, COCO json cache).
    """

    def __init__(self, cfg):
        with _cpu_aware_ddp():
            super().__init__(cfg)
        mode = cfg.SOLVER.CPU_AMP.MODE
        if use_cpu_amp(mode, cfg.MODEL.DEVICE):
            logging.getLogger(__name__).info(f"SOLVER.CPU_AMP.MODE {mode!r}: training in bfloat16")
            # After super().__init__: the checkpointer and the hooks keep the model itself.
            self._trainer.model = TrainingAutocast(self._trainer.model)
        elif mode == "auto":
            logging.getLogger(__name__).info(
                "SOLVER.CPU_AMP.MODE 'auto': training in float32 (no bfloat16 instructions here)"
            )

    @classmethod
    def build_model(cls, cfg):
        channels_last = use_cpu_amp(cfg.SOLVER.CPU_AMP.MODE, cfg.MODEL.DEVICE)
        model = super().build_model(cfg)
        # Before DDP wraps it: its gradient buckets take the parameters' layout.
        return to_channels_last(model) if channels_last else model

    def build_hooks(self):
        ret = super().build_hooks()
        if self.cfg.MODEL_EMA.ENABLED:
            # before the checkpointer, so that model_final.pth holds the average
            self.model_ema = ModelEMA(self.model, self.cfg.MODEL_EMA.DECAY)
            self.checkpointer.add_checkpointable("model_ema", self.model_ema)
            at = next(
                (i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer)),
                len(ret),
            )
            ret.insert(at, ModelEMAHook(self.model_ema))
        return ret

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        configure_shelf_datasets(cfg, [dataset_name])
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DenseCOCOEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )

    @classmethod
    def build_train_loader(cls, cfg):
        configure_shelf_datasets(cfg, cfg.DATASETS.TRAIN)
        mapper_cls = ShelfDatasetMapper
        if issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), GaussianRetinaNet):
            mapper_cls = GaussianDatasetMapper
        if cfg.INPUT.MOSAIC_PROB == 0:
            return build_detection_train_loader(cfg, mapper=mapper_cls(cfg, is_train=True))
        # The mosaic draws its other three images from the same records the loader samples.
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        dataset = DatasetFromList(dicts, copy=False)
        mapper = mapper_cls(cfg, is_train=True, mosaic_pool=dataset)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        configure_shelf_datasets(cfg, [dataset_name])
        return build_detection_test_loader(
            cfg, dataset_name, mapper=ShelfDatasetMapper(cfg, is_train=False)
        )
