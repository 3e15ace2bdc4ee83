"""SGD with momentum correction (Goyal et al. 2017, section 2.4)."""

import pytest
import torch

from bigbatch.optim import SGD, LRSchedule

SCHEDULE = LRSchedule(peak_lr=3.2, total_steps=30, warmup_steps=10, warmup_start_lr=0.1, decay="cosine")


def gradients(step: int, shapes) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


def run(make_optimizer, steps: int = 30) -> list[list[torch.Tensor]]:
    torch.manual_seed(0)
    shapes = [(4, 3), (3,)]
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    opt = make_optimizer(params)
    history = []
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = SCHEDULE(t)
        for p, g in zip(params, gradients(t, shapes), strict=True):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("nesterov", [False, True])
def test_with_correction_it_follows_torch_sgd_lr_outside_form(nesterov):
    kw = dict(momentum=0.9, weight_decay=1e-4, nesterov=nesterov)
    ours = run(lambda p: SGD(p, lr=0.1, momentum_correction=True, **kw))
    ref = run(lambda p: torch.optim.SGD(p, lr=0.1, **kw))
    for a, b in zip(ours, ref, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_without_correction_it_diverges_during_warmup():
    kw = dict(momentum=0.9, weight_decay=1e-4)
    ours = run(lambda p: SGD(p, lr=0.1, momentum_correction=False, **kw), steps=10)
    ref = run(lambda p: torch.optim.SGD(p, lr=0.1, **kw), steps=10)
    gap = max((x - y).abs().max().item() for x, y in zip(ours[-1], ref[-1], strict=True))
    assert gap > 1e-2


def test_lr_inside_form_written_from_the_paper():
    # v <- m v + lr (g + wd w); w <- w - v; with v <- (lr_t / lr_{t-1}) v when the lr changes
    m, wd = 0.9, 1e-4
    torch.manual_seed(0)
    shapes = [(4, 3), (3,)]
    w = [torch.randn(s, dtype=torch.float64) for s in shapes]
    v = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    ours = run(lambda p: SGD(p, lr=0.1, momentum=m, weight_decay=wd), steps=15)
    prev_lr = None
    for t in range(15):
        lr = SCHEDULE(t)
        for i, g in enumerate(gradients(t, shapes)):
            if prev_lr is not None:
                v[i] = v[i] * (lr / prev_lr)
            v[i] = m * v[i] + lr * (g + wd * w[i])
            w[i] = w[i] - v[i]
        prev_lr = lr
        for i in range(len(w)):
            torch.testing.assert_close(ours[t][i], w[i], rtol=0, atol=1e-12)


def test_momentum_buffer_survives_state_dict_roundtrip():
    params = [torch.ones(3, requires_grad=True)]
    opt = SGD(params, lr=0.1, momentum=0.9)
    params[0].grad = torch.ones(3)
    opt.step()
    clone = SGD([torch.ones(3, requires_grad=True)], lr=0.1, momentum=0.9)
    clone.load_state_dict(opt.state_dict())
    assert clone.param_groups[0]["last_lr"] == 0.1
    assert torch.equal(next(iter(clone.state.values()))["momentum_buffer"], torch.full((3,), 0.1))
