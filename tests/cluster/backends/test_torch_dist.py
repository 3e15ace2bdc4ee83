"""TorchDistributedCollective's reductions: the gathered path for small tensors and all_reduce for large ones."""

import pytest
import torch

from tests.gloo import spawn_gloo


def _reduce_everything(rank: int, world: int) -> None:
    from bigbatch.cluster.backends.torch_dist import GATHER_REDUCE_MAX_ELEMENTS, TorchDistributedCollective

    collective = TorchDistributedCollective("cpu")
    for numel in (3, GATHER_REDUCE_MAX_ELEMENTS):  # 3 x world is gathered, the other is all-reduced
        mine = [torch.arange(numel, dtype=torch.float64) * (r + 1) - r for r in range(world)]
        expected = {"sum": sum(mine), "mean": sum(mine) / world,
                    "max": torch.stack(mine).max(0).values, "min": torch.stack(mine).min(0).values}
        for op, want in expected.items():
            got = collective.all_reduce(mine[rank].clone(), op=op)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-9, msg=f"{op} of {numel}")
    shaped = collective.all_reduce(torch.full((2, 3), float(rank)), op="sum")
    assert shaped.shape == (2, 3) and torch.equal(shaped, torch.full((2, 3), float(sum(range(world)))))
    assert collective.comm_seconds > 0


@pytest.mark.timeout(120)
def test_reductions_match_their_definition_on_three_processes():
    spawn_gloo(_reduce_everything, 3)
