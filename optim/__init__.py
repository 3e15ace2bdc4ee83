"""Large-batch optimization toolkit. Imports torch and nothing of bigbatch's."""

from optim.scaling import RULES as LR_SCALING_RULES
from optim.scaling import scale_lr
from optim.schedule import SCHEDULES, warmup_then_decay

__all__ = ["LR_SCALING_RULES", "SCHEDULES", "scale_lr", "warmup_then_decay"]
