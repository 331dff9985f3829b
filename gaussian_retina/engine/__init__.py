from .trainer import Trainer, create_ddp_model

__all__ = ["Trainer", "create_ddp_model"]
