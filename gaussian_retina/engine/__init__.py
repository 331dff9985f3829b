"""
The assembly: it wires the core and the wings together for train_net.py and the tools, so it
may import all of them.
"""
from .project_config import get_project_cfg
from .trainer import Trainer, create_ddp_model
