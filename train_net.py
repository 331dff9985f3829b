#!/usr/bin/env python3
"""
Trains and evaluates gaussian-retina models (GLN, GDN and the baselines) with Detectron2.

    python train_net.py --config-file configs/synthetic/gln_R18.yaml
    python train_net.py --config-file configs/synthetic/gln_R18.yaml --num-gpus 2   # 2 processes, CPU too
    python train_net.py --config-file configs/synthetic/gln_R18.yaml --resume       # after a kill
    python train_net.py --config-file configs/gln_R50.yaml --num-gpus 8
    python train_net.py --config-file configs/gln_R50.yaml --eval-only MODEL.WEIGHTS model.pth
"""
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from gaussian_retina.engine import Trainer, get_project_cfg


def setup(args):
    cfg = get_project_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup only sets up detectron2's and fvcore's loggers: without this, the add-on's
    # messages (e.g. whether SOLVER.CPU_AMP trains in bfloat16) would not reach the log.
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gaussian_retina")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
