"""LARS against You et al. 2017, Algorithm 1, written out per layer with plain tensors."""

import pytest
import torch

from bigbatch.optim import LARS, last_trust_ratios


def reference_step(w, g, v, *, lr, m, wd, eta, eps, nesterov, clip, adapt):
    local = 1.0
    if adapt:
        wn, gn = w.norm().item(), g.norm().item()
        local = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
        if clip:
            local = min(local / lr, 1.0)
        d = lr * local * (g + wd * w)
    else:
        d = lr * g
    v = m * v + d
    w = w - (m * v + d if nesterov else v)
    return w, v, local


def make_problem():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(8, 4, generator=g, dtype=torch.float64),  # adapted
               torch.zeros(5, dtype=torch.float64),  # adapted, zero norm -> local lr 1
               torch.randn(6, dtype=torch.float64, generator=g) * 0.01,  # adapted, gets a zero gradient
               torch.randn(4, dtype=torch.float64, generator=g)]  # excluded (bias-like)
    return weights


@pytest.mark.parametrize("nesterov,clip", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_algorithm_1_over_several_steps(nesterov, clip):
    lr, m, wd, eta, eps = 2.0, 0.9, 5e-4, 0.001, 1e-9
    weights = make_problem()
    params = [w.clone().requires_grad_() for w in weights]
    opt = LARS([{"params": params[:3]}, {"params": params[3:], "lars_adapt": False, "weight_decay": 0.0}],
               lr=lr, momentum=m, weight_decay=wd, trust_coefficient=eta, eps=eps, nesterov=nesterov,
               trust_clip=clip)
    ref_w = [w.clone() for w in weights]
    ref_v = [torch.zeros_like(w) for w in weights]
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        grads = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in weights]
        grads[2] = torch.zeros_like(grads[2])
        locals_ = []
        for i in range(4):
            ref_w[i], ref_v[i], local = reference_step(
                ref_w[i], grads[i], ref_v[i], lr=lr, m=m, wd=wd if i < 3 else 0.0, eta=eta, eps=eps,
                nesterov=nesterov, clip=clip, adapt=i < 3)
            locals_.append(local)
            params[i].grad = grads[i].clone()
        opt.step()
        for i in range(4):
            torch.testing.assert_close(params[i].detach(), ref_w[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(last_trust_ratios(opt), torch.tensor(locals_[:3], dtype=torch.float64))
        if step == 0:  # the zero weight moves after the first step; the zero gradient stays zero
            assert locals_[1] == (1.0 if not clip else 1.0 / lr)
        assert locals_[2] == (1.0 if not clip else 1.0 / lr)


def test_excluded_group_gets_no_weight_decay_and_no_adaptation():
    p = torch.ones(3, requires_grad=True)
    opt = LARS([{"params": [p], "lars_adapt": False, "weight_decay": 0.0}], lr=0.5, momentum=0.0,
               weight_decay=0.1)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.5 * 2.0))
    assert last_trust_ratios(opt) is None


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError):
        LARS([torch.ones(1, requires_grad=True)], lr=0.1, trust_coefficient=0.0)
    with pytest.raises(ValueError):
        LARS([torch.ones(1, requires_grad=True)], lr=-1.0)
