"""
Multi-process training on a machine without GPUs: Detectron2's launch (gloo), two processes, a few
iterations of GLN through the project's Trainer.
"""
import json
import math

from detectron2.engine import HookBase, launch
from detectron2.utils import comm

from common import get_config

MAX_ITER = 3


class _RecordSteps(HookBase):
    """Records, after each step, the iteration, this process's losses and a parameter checksum."""

    def before_train(self):
        self.steps, self._losses = [], {}
        model = getattr(self.trainer.model, "module", self.trainer.model)
        model.register_forward_hook(
            lambda m, i, losses: self._losses.update({k: float(v) for k, v in losses.items()})
        )

    def after_step(self):
        model = getattr(self.trainer.model, "module", self.trainer.model)
        checksum = sum(p.detach().double().sum().item() for p in model.parameters())
        self.steps.append({"iter": self.trainer.iter, "checksum": checksum, "losses": self._losses})
        self._losses = {}


def _train(dataset_root, output_dir):
    import torch

    from gaussian_retina.shelves import register_synthetic_shelves
    from gaussian_retina.engine import Trainer

    torch.set_num_threads(1)
    register_synthetic_shelves(dataset_root)
    cfg = get_config(
        "synthetic/gln_R18.yaml",
        "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", MAX_ITER, "SOLVER.WARMUP_ITERS", 0,
        "SOLVER.STEPS", (), "DATALOADER.NUM_WORKERS", 0, "DATASETS.TEST", (),
        "OUTPUT_DIR", output_dir,
    )
    trainer = Trainer(cfg)
    recorder = _RecordSteps()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(f"{output_dir}/steps.rank{comm.get_rank()}.json", "w") as f:
        json.dump({"world_size": comm.get_world_size(), "steps": recorder.steps}, f)


def test_two_processes_on_cpu_take_the_same_steps(synthetic_root, tmp_path):
    # On a machine without GPUs launch() uses gloo; the Trainer must build DDP without device ids.
    launch(_train, 2, dist_url="auto", args=(synthetic_root, str(tmp_path)))

    ranks = [json.loads((tmp_path / f"steps.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    steps0, steps1 = (r["steps"] for r in ranks)
    assert [s["iter"] for s in steps0] == [s["iter"] for s in steps1] == list(range(MAX_ITER))
    for s0, s1 in zip(steps0, steps1):
        # DDP averages the gradients: both copies of the model take the same step.
        assert s0["checksum"] == s1["checksum"]
        for s in (s0, s1):
            assert set(s["losses"]) == {"loss_cls", "loss_box_reg", "loss_gaussian"}
            assert all(math.isfinite(v) for v in s["losses"].values())
    # ... and they are real steps on different halves of the batch.
    assert steps0[0]["checksum"] != steps0[-1]["checksum"]
    assert steps0[0]["losses"] != steps1[0]["losses"]
