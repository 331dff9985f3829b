"""
A tiny training run on the synthetic shelves, through train_net.py's Trainer and the project's
evaluator: tens of iterations must lift AP50 above what the same model scores untrained.
"""
import pytest
import torch

from common import get_config, tiny_synthetic_split
from gaussian_retina.engine import Trainer
from gaussian_retina.shelves.synthetic_scene import ShelfSceneParams


NAME = "synthetic_shelves_e2e_tiny"


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    # Small scenes keep the run to about a minute on two cores.
    params = ShelfSceneParams(long_side=256, short_side=192, portrait_prob=0.0, min_objects=8,
                              max_objects=40, min_shelf_pitch=48, max_shelf_pitch=90)
    with tiny_synthetic_split(NAME, root, params, num_images=4) as name:
        yield name


def test_tiny_run_learns(tiny_split, tmp_path):
    torch.set_num_threads(2)
    cfg = get_config("synthetic/gln_R18.yaml")
    # Learn the four training scenes (a check of the whole pipeline, not of generalisation).
    cfg.merge_from_list([
        "DATASETS.TRAIN", (tiny_split,), "DATASETS.TEST", (tiny_split,),
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 60, "SOLVER.WARMUP_ITERS", 5,
        "SOLVER.STEPS", (), "SOLVER.BASE_LR", 0.01, "DATALOADER.NUM_WORKERS", 0,
        "INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SIZE_TRAIN", (192,), "INPUT.MAX_SIZE_TRAIN", 256,
        "INPUT.MIN_SIZE_TEST", 192, "INPUT.MAX_SIZE_TEST", 256,
        # Rank every candidate: an untrained head's scores sit at the 0.01 prior.
        "MODEL.RETINANET.SCORE_THRESH_TEST", 0.005,
        "OUTPUT_DIR", str(tmp_path), "SEED", 1,
    ])
    cfg.freeze()

    # With one test set, Trainer.test returns its results directly.
    untrained = Trainer.test(cfg, Trainer.build_model(cfg)).get("bbox", {})
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    trained = Trainer.test(cfg, trainer.model)["bbox"]

    for name in ["AP", "AP50", "AP75", "AR300", "AR300@50"]:
        assert 0 <= trained[name] <= 100
    assert untrained.get("AP50", 0.0) < 5.0
    assert trained["AP50"] > 5.0
    assert trained["AR300@50"] > untrained.get("AR300@50", 0.0) + 20.0
