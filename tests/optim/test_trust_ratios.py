"""Trust ratios kept in the param groups: the papers' formulas per layer, and the ratios travel with the
optimizer (deepcopy, pickle, state_dict) as timm's optimizer tests expect of any optimizer state."""

import copy
import io
import pickle

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bigbatch.optim import LAMB, LARS, SGD, last_trust_ratios


def _weights(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64),
            torch.randn(3, 3, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in _weights()]


def _groups(params: list[torch.Tensor]) -> list[dict]:
    """Two adapted groups with their own hyperparameters, and an excluded (bias-like) one."""
    return [{"params": params[:2]}, {"params": params[2:3], "weight_decay": 0.01},
            {"params": params[3:], "lars_adapt": False, "weight_decay": 0.0}]


OPTIMIZERS = {
    "lars": lambda params: LARS(_groups(params), lr=0.5, momentum=0.9, weight_decay=5e-4, trust_coefficient=0.02,
                                eps=1e-9),
    "lars_nesterov_clip": lambda params: LARS(_groups(params), lr=0.5, momentum=0.9, weight_decay=5e-4,
                                              trust_coefficient=0.02, nesterov=True, trust_clip=True),
    "lamb": lambda params: LAMB(_groups(params), lr=0.01, weight_decay=0.1),
}


def _stepped(name: str, steps: int = 2) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    params = [w.clone().requires_grad_() for w in _weights()]
    opt = OPTIMIZERS[name](params)
    for step in range(steps):
        for p, g in zip(params, _grads(step), strict=True):
            p.grad = g.clone()
        opt.step()
    return opt, params


def _step_again(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    for p, g in zip(params, _grads(99), strict=True):
        p.grad = g.clone()
    opt.step()


# ------------------------------------------------------------------------------------- the papers' formulas

def test_lars_ratios_are_the_local_lr_of_you_2017_per_layer_and_group():
    lr, wd, eta, eps = 0.5, 5e-4, 0.02, 1e-9
    weights = _weights()
    params = [w.clone().requires_grad_() for w in weights]
    opt = LARS(_groups(params), lr=lr, momentum=0.9, weight_decay=wd, trust_coefficient=eta, eps=eps)
    for p, g in zip(params, _grads(0), strict=True):
        p.grad = g.clone()
    opt.step()
    # You, Gitman, Ginsburg 2017, Algorithm 1: local_lr = eta * ||w|| / (||g|| + beta * ||w||), eps in the denominator
    expected = [[eta * w.norm() / (g.norm() + beta * w.norm() + eps) for w, g in pairs]
                for pairs, beta in ((list(zip(weights[:2], _grads(0)[:2], strict=True)), wd),
                                    (list(zip(weights[2:3], _grads(0)[2:3], strict=True)), 0.01))]
    first, second, excluded = opt.param_groups
    torch.testing.assert_close(first["trust_ratios"], torch.stack(expected[0]), rtol=1e-12, atol=0)
    torch.testing.assert_close(second["trust_ratios"], torch.stack(expected[1]), rtol=1e-12, atol=0)
    assert "trust_ratios" not in excluded
    assert first["trust_ratios"].dtype == torch.float64 and first["trust_ratios"].device == params[0].device
    torch.testing.assert_close(last_trust_ratios(opt), torch.stack(expected[0] + expected[1]), rtol=1e-12, atol=0)


def test_lamb_ratios_are_the_trust_ratio_of_you_2019_per_layer_and_group():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.1
    weights = _weights()
    params = [w.clone().requires_grad_() for w in weights]
    opt = LAMB(_groups(params), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = [w.clone() for w in weights]
    m = [torch.zeros_like(w) for w in weights]
    v = [torch.zeros_like(w) for w in weights]
    for t in (1, 2):
        expected = []
        for i, g in enumerate(_grads(t)):
            # You et al. 2019, Algorithm 2: bias-corrected Adam direction plus decoupled decay, then ||w|| / ||u||
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            r = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            if i < 3:
                u = r + (wd if i < 2 else 0.01) * ref[i]
                ratio = ref[i].norm() / u.norm()
                expected.append(ratio)
                ref[i] = ref[i] - lr * ratio * u
            else:
                ref[i] = ref[i] - lr * r
            params[i].grad = g.clone()
        opt.step()
        first, second, excluded = opt.param_groups
        torch.testing.assert_close(first["trust_ratios"], torch.stack(expected[:2]), rtol=1e-10, atol=0)
        torch.testing.assert_close(second["trust_ratios"], torch.stack(expected[2:]), rtol=1e-10, atol=0)
        assert "trust_ratios" not in excluded
        torch.testing.assert_close(last_trust_ratios(opt), torch.stack(expected), rtol=1e-10, atol=0)


def test_a_group_without_gradients_this_step_keeps_no_ratios_and_sgd_has_none():
    opt, params = _stepped("lars", steps=1)
    assert "trust_ratios" in opt.param_groups[1]
    for p, g in zip(params, _grads(1), strict=True):
        p.grad = g.clone()
    params[2].grad = None  # the second group's only parameter: not adapted this step
    opt.step()
    assert "trust_ratios" not in opt.param_groups[1]
    assert last_trust_ratios(opt).shape == (2,)
    assert last_trust_ratios(LARS([torch.ones(2, requires_grad=True)], lr=0.1)) is None  # before any step
    sgd_params = [w.clone().requires_grad_() for w in _weights()]
    sgd = SGD(sgd_params, lr=0.1, momentum=0.9)
    for p, g in zip(sgd_params, _grads(0), strict=True):
        p.grad = g
    sgd.step()
    assert last_trust_ratios(sgd) is None and all("trust_ratios" not in g for g in sgd.param_groups)
    assert last_trust_ratios(torch.optim.SGD(sgd_params, lr=0.1)) is None  # any optimizer with param groups


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:  # .item(), float(), bool() of a tensor
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_keeping_and_reading_the_ratios_reads_nothing_back_to_the_host(name):
    opt, params = _stepped(name, steps=1)
    with HostReads() as reads:
        _step_again(opt, params)
        ratios = last_trust_ratios(opt)
    assert reads.count == 0
    assert ratios.shape == (3,)


# ------------------------------------------------------------------------------------- the ratios travel

def _assert_same_ratios(copied: torch.optim.Optimizer, original: torch.optim.Optimizer) -> None:
    assert ["trust_ratios" in g for g in copied.param_groups] == ["trust_ratios" in g for g in original.param_groups]
    for a, b in zip(copied.param_groups, original.param_groups, strict=True):
        if "trust_ratios" in b:
            assert torch.equal(a["trust_ratios"], b["trust_ratios"])
            assert a["trust_ratios"].device == a["params"][0].device
    assert torch.equal(last_trust_ratios(copied), last_trust_ratios(original))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_ratios_survive_deepcopy_and_pickle(name):
    opt, _ = _stepped(name)
    for copied in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        _assert_same_ratios(copied, opt)
        assert copied.param_groups[0]["trust_ratios"] is not opt.param_groups[0]["trust_ratios"]
        _step_again(copied, [p for g in copied.param_groups for p in g["params"]])  # the copy steps on its own
        assert not torch.equal(last_trust_ratios(copied), last_trust_ratios(opt))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_ratios_survive_a_checkpoint_round_trip_and_the_next_step_matches(name):
    opt, params = _stepped(name)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as trainer checkpoints do, read back with weights_only
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    fresh_params = [p.detach().clone().requires_grad_() for p in params]
    fresh = OPTIMIZERS[name](fresh_params)
    fresh.load_state_dict(saved)
    _assert_same_ratios(fresh, opt)
    _step_again(opt, params)
    _step_again(fresh, fresh_params)
    for a, b in zip(fresh_params, params, strict=True):
        assert torch.equal(a, b)
    _assert_same_ratios(fresh, opt)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("into", ["a new optimizer", "one with ratios of its own"])
def test_a_state_dict_from_before_the_ratios_were_kept_still_loads(name, into):
    opt, params = _stepped(name)
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:  # what the optimizers wrote before: no trust_ratios in any group
        group.pop("trust_ratios", None)
    if into == "a new optimizer":
        fresh_params = [p.detach().clone().requires_grad_() for p in params]
        fresh = OPTIMIZERS[name](fresh_params)
    else:
        fresh, fresh_params = _stepped(name, steps=1)
        assert last_trust_ratios(fresh) is not None
        with torch.no_grad():
            for w, w0 in zip(fresh_params, params, strict=True):
                w.copy_(w0)
    fresh.load_state_dict(old)
    assert last_trust_ratios(fresh) is None
    _step_again(opt, params)
    _step_again(fresh, fresh_params)
    for a, b in zip(fresh_params, params, strict=True):  # the moments and buffers loaded: the same next step
        assert torch.equal(a, b)
    _assert_same_ratios(fresh, opt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ratios_stay_on_the_parameters_device_without_a_sync_and_load_back_there():
    params = [w.cuda().requires_grad_() for w in _weights()]
    opt = OPTIMIZERS["lars"](params)
    for p, g in zip(params, _grads(0), strict=True):
        p.grad = g.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
        ratios = last_trust_ratios(opt)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ratios.is_cuda and opt.param_groups[0]["trust_ratios"].is_cuda
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    on_cpu = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    fresh = OPTIMIZERS["lars"]([p.detach().clone().requires_grad_() for p in params])
    fresh.load_state_dict(on_cpu)
    assert fresh.param_groups[0]["trust_ratios"].is_cuda
    assert torch.equal(last_trust_ratios(fresh).cpu(), ratios.cpu())
