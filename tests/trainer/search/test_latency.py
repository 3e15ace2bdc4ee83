"""The per-block latency table: every block timed at the input shape it really gets, a candidate's latency is
the sum of its entries, and a latency cap keeps every drawn candidate under it."""

import numpy as np
import pytest
import torch

from bigbatch.cluster.search import SearchSpace
from bigbatch.trainer.data import load_data
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.build import build_model
from bigbatch.trainer.search import evolution
from bigbatch.trainer.search.latency import LatencyTable, block_input_shapes, measure_latency_table
from tests.cluster.conftest import REPO

RECIPE = REPO / "recipes" / "search" / "digits_spos.yaml"
FAST = {"warmup": 1, "repeats": 3, "min_seconds": 0.0}


@pytest.fixture(scope="module")
def measured():
    recipe = load_recipe(RECIPE, [])
    data = load_data(recipe.data, recipe.seed)
    supernet = build_model(recipe, data, torch.device("cpu"))
    paths = [[0] * 20, [3, 2, 1, 0] * 5]
    table = measure_latency_table(supernet, data.channels, data.image_size, [1, 4], torch.device("cpu"), paths, **FAST)
    return recipe, data, supernet, table


def test_each_position_is_timed_at_the_shape_a_forward_pass_gives_it(measured):
    _, data, supernet, _ = measured
    seen = []
    supernet.set_path([2] * 20)
    hooks = [position[2].register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[1:])))
             for position in supernet.blocks]
    supernet.eval()
    with torch.no_grad():
        supernet(torch.zeros(1, data.channels, data.image_size, data.image_size))
    for hook in hooks:
        hook.remove()
    assert block_input_shapes(supernet, data.channels, data.image_size, torch.device("cpu"))[:-1] == seen


def test_a_candidates_latency_is_stem_and_tail_plus_its_blocks_and_whole_networks_are_checked(measured):
    _, _, _, table = measured
    assert table.batches == [1, 4] and all(len(table.blocks_ms[b]) == 20 for b in ("1", "4"))
    assert all(ms > 0 for b in ("1", "4") for row in table.blocks_ms[b] for ms in row)
    path = [1, 0, 3, 2] * 5
    assert table.predict(path, 4) == pytest.approx(table.fixed_ms["4"] + sum(table.blocks_ms["4"][i][c]
                                                                               for i, c in enumerate(path)))
    assert len(table.checks) == 4 and all(c["measured_ms"] > 0 for c in table.checks)
    for check in table.checks:
        assert check["predicted_ms"] == pytest.approx(table.predict(check["choices"], check["batch"]))
    assert "batch 1: mean error" in table.summary() and "batch 4: mean error" in table.summary()


def test_a_latency_cap_keeps_every_drawn_candidate_under_it_and_one_below_the_fastest_is_refused(measured):
    recipe, _, _, table = measured
    rng = np.random.default_rng(0)
    sums = [table.fixed_ms["1"] + sum(table.blocks_ms["1"][i][c] for i, c in enumerate(rng.integers(4, size=20)))
            for _ in range(200)]
    cap = float(np.median(sums))
    space = SearchSpace(load_recipe(RECIPE, ["search.max_macs_m=0", f"search.max_latency_ms={cap}"]), table)
    drawn = evolution.random_candidates(np.random.default_rng(1), space.space, 30, set())
    assert len(drawn) == 30
    assert all(table.fixed_ms["1"] + sum(table.blocks_ms["1"][i][c] for i, c in enumerate(d)) <= cap for d in drawn)
    assert set(space.measures(drawn[0])) == {"macs", "params", "latency_ms_b1", "latency_ms_b4"}
    fastest = table.fixed_ms["1"] + sum(min(row) for row in table.blocks_ms["1"])
    with pytest.raises(RecipeError, match="search.max_latency_ms: .* is below the fastest network"):
        SearchSpace(load_recipe(RECIPE, [f"search.max_latency_ms={fastest * 0.9}"]), table)
    assert LatencyTable(**{**table.__dict__}).predict(drawn[0]) == table.predict(drawn[0])
