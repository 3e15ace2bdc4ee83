"""bench/noise_cost.py's pairs: each side's recipe is the other's but for what the comparison names (--policy:
the adaptive policy pinned to the global batch, so the batch and the work never change), and the lr check
catches a pair that took different lrs."""

import dataclasses

import pytest

from bench.noise_cost import GLOBAL_BATCH, NOISE, POLICY, lr_differences, make_recipe


def flat(value, prefix=""):
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


@pytest.mark.parametrize("gloo", [True, False])
@pytest.mark.parametrize("comparison, differ", [(NOISE, {"track.noise_scale"}),
                                                (POLICY, {"train.batch_policy", "train.adaptive"})])
def test_the_sides_differ_only_in_what_the_comparison_names(tmp_path, gloo, comparison, differ):
    on, off = (flat(make_recipe(tmp_path, gloo=gloo, log_every=10, on=side, steps=21, comparison=comparison))
               for side in (True, False))
    assert {key.split(".adaptive.")[0] + ".adaptive" if ".adaptive." in key else key
            for key in on.keys() | off.keys() if on.get(key) != off.get(key)} == differ


def test_the_adaptive_side_is_pinned_to_the_global_batch(tmp_path):
    recipe = make_recipe(tmp_path, gloo=True, log_every=1, on=True, steps=21, comparison=POLICY)
    assert recipe.global_batch == GLOBAL_BATCH and recipe.adaptive_range == (GLOBAL_BATCH, GLOBAL_BATCH)
    assert recipe.train.batch_policy == "adaptive" and recipe.track.noise_scale


def test_the_lr_check_names_a_pair_that_took_different_lrs():
    same = {"lrs": [[0, 0.01, None], [1, 0.02, None]]}
    rows = [(1, "gloo log1", True, {"lrs": [[0, 0.01, 1.0], [1, 0.02, 1.0]]}), (1, "gloo log1", False, same)]
    assert lr_differences(rows) == []
    rows[0][3]["lrs"][1][1] = 0.020000001
    assert lr_differences(rows) == ["repeat 1 gloo log1 pair 1: lr differs at 1 step(s), first step 1: "
                                    "0.020000001 on, 0.02 off"]
