"""optim.name: rmsproptf follows TensorFlow's RMSProp (the MobileNet v2 / MnasNet / EfficientNet optimizer).

Reference, tf.compat.v1.train.RMSPropOptimizer (momentum form), written out here:
    ms  <- rho ms + (1 - rho) g^2          ms starts at 1
    mom <- momentum mom + lr g / sqrt(ms + eps)
    w   <- w - mom
with L2 weight decay added to the gradient, g = grad + wd w.
"""

import torch
import torch.nn as nn

from bigbatch.trainer.recipe.schema import OptimConfig, RmspropConfig
from bigbatch.trainer.run.build import make_optimizer


def test_rmsproptf_matches_tensorflows_update_with_a_changing_lr_and_the_excluded_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    rho, eps, momentum, wd = 0.9, 1e-3, 0.9, 1e-2
    cfg = OptimConfig(name="rmsproptf", base_lr=0.1, momentum=momentum, weight_decay=wd,
                      rmsprop=RmspropConfig(alpha=rho, eps=eps))
    optimizer = make_optimizer(cfg, model, lr=0.1)
    decayed = {id(model[0].weight)}  # biases and BatchNorm are excluded from weight decay
    params = list(model.parameters())
    w = [p.detach().clone() for p in params]
    ms = [torch.ones_like(p) for p in params]
    mom = [torch.zeros_like(p) for p in params]
    x = torch.randn(8, 4)
    for step, lr in enumerate([0.1, 0.05, 0.2]):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        grads = [p.grad.detach().clone() for p in params]
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        for i, p in enumerate(params):
            g = grads[i] + (wd * w[i] if id(p) in decayed else 0)
            ms[i] = rho * ms[i] + (1 - rho) * g * g
            mom[i] = momentum * mom[i] + lr * g / torch.sqrt(ms[i] + eps)
            w[i] = w[i] - mom[i]
            torch.testing.assert_close(p.detach(), w[i], rtol=1e-5, atol=1e-6, msg=f"step {step} param {i}")
