"""Large-batch optimization toolkit. Imports torch and nothing of bigbatch's.

lr scaling (Goyal et al. 2017 section 2.1), warmup and decay schedules as
functions of the step (2.2), SGD with momentum correction (2.4), LARS (You et
al. 2017), LAMB (You et al. 2019), parameter groups that exclude biases and
normalisation, the SGD noise scale (Smith et al. 2018), and the AdaScale gain
(Johnson et al. 2020) with Pollux's statistical efficiency, the math of an
adaptive global batch (issue 31). LARS and LAMB keep the trust ratios of their
last step in each adapted param group (`group["trust_ratios"]`);
`last_trust_ratios(optimizer)` gathers them.
"""

from ._common import last_trust_ratios
from .adascale import adascale_gain, statistical_efficiency
from .lamb import LAMB
from .lars import LARS
from .noise import noise_scale
from .param_groups import is_excluded, split_param_groups
from .scaling import RULES as LR_SCALING_RULES
from .scaling import scale_lr
from .schedule import DECAYS, WARMUPS, LRSchedule
from .sgd import SGD

OPTIMIZERS = ("sgd", "lars", "lamb", "rmsproptf")  # rmsproptf: timm's RMSpropTF (trainer/run/build.py)

__all__ = ["DECAYS", "LAMB", "LARS", "LR_SCALING_RULES", "OPTIMIZERS", "SGD", "WARMUPS", "LRSchedule",
           "adascale_gain", "is_excluded", "last_trust_ratios", "noise_scale", "scale_lr", "split_param_groups",
           "statistical_efficiency"]
