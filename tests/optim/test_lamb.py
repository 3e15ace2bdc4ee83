"""LAMB against You et al. 2019, Algorithm 2, written out per layer with plain tensors."""

import pytest
import torch

from bigbatch.optim import LAMB, last_trust_ratios


def test_matches_algorithm_2_over_several_steps():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.01
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(6, 5, generator=gen, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
               torch.randn(5, generator=gen, dtype=torch.float64)]
    adapt = [True, True, False]
    params = [w.clone().requires_grad_() for w in weights]
    opt = LAMB([{"params": params[:2]}, {"params": params[2:], "lars_adapt": False, "weight_decay": 0.0}],
               lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = [w.clone() for w in weights]
    m = [torch.zeros_like(w) for w in weights]
    v = [torch.zeros_like(w) for w in weights]
    for t in range(1, 6):
        grads = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in weights]
        ratios = []
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            r = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            if adapt[i]:
                u = r + wd * ref[i]
                wn, un = ref[i].norm().item(), u.norm().item()
                ratio = wn / un if wn > 0 and un > 0 else 1.0
                ratios.append(ratio)
                ref[i] = ref[i] - lr * ratio * u
            else:
                ref[i] = ref[i] - lr * r
            params[i].grad = g.clone()
        opt.step()
        for i in range(3):
            torch.testing.assert_close(params[i].detach(), ref[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(last_trust_ratios(opt), torch.tensor(ratios, dtype=torch.float64))
    assert ratios[1] != 1.0  # the zero weight moved after the first step, so later ratios are real


def test_zero_weight_gets_ratio_one_on_first_step():
    p = torch.zeros(3, requires_grad=True)
    opt = LAMB([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert last_trust_ratios(opt).tolist() == [1.0]
    assert torch.allclose(p.detach(), torch.full((3,), -0.1), atol=1e-5)


def test_rejects_bad_betas():
    with pytest.raises(ValueError):
        LAMB([torch.ones(1, requires_grad=True)], lr=0.1, betas=(1.0, 0.999))
