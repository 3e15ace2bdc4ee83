"""The shared update's two paths (multi-tensor for CUDA, in-place per tensor for CPU) agree."""

import pytest
import torch

from bigbatch.optim._common import momentum_update


@pytest.mark.parametrize("nesterov,with_buffer", [(False, False), (False, True), (True, True)])
@pytest.mark.parametrize("tensor_scales", [False, True])
def test_foreach_and_per_tensor_paths_agree(nesterov, with_buffer, tensor_scales):
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    bufs = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    g_scale = [torch.tensor(0.1 * (i + 1), dtype=torch.float64) for i in range(3)] if tensor_scales else 0.2
    w_scale = [torch.tensor(0.01 * (i + 1), dtype=torch.float64) for i in range(3)] if tensor_scales else 0.003
    results = []
    for foreach in (True, False):
        p = [t.clone() for t in params]
        b = [t.clone() for t in bufs] if with_buffer else None
        momentum_update(p, grads, b, 0.9, g_scale, w_scale, nesterov, buffer_decay=0.8, foreach=foreach)
        results.append((p, b))
    # and from the formula: d = a g + c w; v <- 0.8 v + d; w <- w - v (Nesterov: w - (0.9 v + d); no buffer: w - d)
    for i in range(3):
        a = g_scale[i] if tensor_scales else g_scale
        c = w_scale[i] if tensor_scales else w_scale
        d = a * grads[i] + c * params[i]
        if with_buffer:
            v = 0.8 * bufs[i] + d
            w = params[i] - (0.9 * v + d if nesterov else v)
        else:
            w = params[i] - d
        for p, _ in results:
            torch.testing.assert_close(p[i], w, rtol=0, atol=1e-12)
