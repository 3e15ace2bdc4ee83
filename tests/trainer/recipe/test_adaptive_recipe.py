"""The recipe keys of an adaptive global batch (issue 31, item 1): train.batch_policy and train.adaptive, their
defaults, the resolved batch range, and the rules that refuse what the adaptive policy cannot run, at load, in one
line naming the file (or --set) and the key."""

import pytest

from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.fields import FieldProblem
from bigbatch.trainer.recipe.schema import AdaptiveConfig
from tests.trainer.recipe.test_recipe_rules import refused

ADAPTIVE = "train.batch_policy=adaptive"
TORCH4 = ["cluster.backend=torch", "cluster.workers=4"]  # with tiny's data.batch_size 32: G0 = 128


def test_the_defaults_keep_one_global_batch(tiny):
    recipe = load_recipe(tiny)
    assert recipe.train.batch_policy == "fixed"
    assert recipe.train.adaptive == AdaptiveConfig()
    a = recipe.train.adaptive
    assert (a.min_batch, a.max_batch, a.every_steps, a.min_improvement, a.min_readings) == (0, 0, 50, 1.05, 5)
    assert (a.assume_step_s, a.assume_example_s) == (0.0, 0.0)


@pytest.mark.parametrize("overrides,expected", [
    ([], (128, 8 * 128)),  # zeros: G0 = 4 workers x 32 and 8 x G0
    (["train.accumulation_steps=2"], (256, 2048)),
    (["train.adaptive.min_batch=4"], (4, 1024)),
    (["train.adaptive.max_batch=200"], (128, 200)),
    (["train.adaptive.min_batch=64", "train.adaptive.max_batch=64"], (64, 64)),
])
def test_the_range_resolves_its_zeros_against_the_global_batch(tiny, overrides, expected):
    recipe = load_recipe(tiny, [*TORCH4, ADAPTIVE, *overrides])
    assert recipe.adaptive_range == expected
    assert load_recipe(tiny, [*TORCH4, *overrides]).adaptive_range == expected  # a property of the keys alone


def test_what_the_rules_allow_loads(tiny):
    lars = load_recipe(tiny, [*TORCH4, ADAPTIVE, "optim.name=lars", "train.adaptive.every_steps=10",
                              "train.adaptive.min_improvement=1.0", "train.adaptive.assume_step_s=0.02",
                              "train.adaptive.assume_example_s=1e-4"])
    assert lars.train.batch_policy == "adaptive" and lars.train.adaptive.assume_example_s == 1e-4
    assert load_recipe(tiny, [*TORCH4, ADAPTIVE, "data.aug_repeats=2"]).adaptive_range == (128, 1024)


# (what, overrides, key, the expected message after "KEY: ")
RULES = [
    ("AdaScale's gain is SGD's", ["optim.name=lamb"], "train.batch_policy",
     "adaptive scales the lr by AdaScale's gain, which is derived for SGD's update (linear in the gradient); "
     "optim.name is 'lamb': use sgd or lars, or train.batch_policy: fixed"),
    ("not with batch growth", ["train.batch_growth_epochs=[1]"], "train.batch_growth_epochs",
     "expected none with train.batch_policy adaptive, which chooses the global batch itself (both change the "
     "batch), got [1]"),
    ("not on shards", ["data.name=shards", "data.root=x"], "train.batch_policy",
     "adaptive reads indexed data sets (digits, mnist, fashion_mnist, synthetic, folder); data.name shards "
     "streams one global batch per epoch: use train.batch_policy: fixed"),
    ("an example per worker", ["train.adaptive.min_batch=3"], "train.adaptive.min_batch",
     "expected at least cluster.workers (4): every worker needs an example a step, got 3"),
    ("min above max, both set", ["train.adaptive.min_batch=512", "train.adaptive.max_batch=256"],
     "train.adaptive.max_batch", "expected at least train.adaptive.min_batch (512), got 256"),
    ("the default min above the max", ["train.adaptive.max_batch=64"], "train.adaptive.max_batch",
     "expected at least the smallest batch, min_batch 0 = the global batch 128 (cluster.workers x data.batch_size "
     "x train.accumulation_steps), got 64"),
    ("the min above the default max", ["train.adaptive.min_batch=2048"], "train.adaptive.min_batch",
     "expected at most the largest batch, max_batch 0 = 8 x the global batch = 1024, got 2048"),
    ("repeats divide both ends", ["data.aug_repeats=2", "train.adaptive.max_batch=301"], "data.aug_repeats",
     "must divide both ends of the adaptive batch range (train.adaptive.min_batch 128, max_batch 301), got 2"),
    ("bad values", ["train.adaptive.min_improvement=0.9"], "train.adaptive.min_improvement",
     "expected a value >= 1.0, got 0.9"),
    ("unknown policy", ["train.batch_policy=adaptiv"], "train.batch_policy",
     "expected one of 'fixed', 'adaptive', got 'adaptiv' (did you mean 'adaptive'?)"),
]


@pytest.mark.parametrize("case,overrides,key,expected", RULES, ids=[r[0] for r in RULES])
def test_what_the_adaptive_policy_cannot_run_is_refused_at_load(tiny, case, overrides, key, expected):
    message = refused(tiny, [*TORCH4, ADAPTIVE, *overrides], key)
    assert message.startswith(("--set ", f"{tiny}: ")) and message.endswith(f": {key}: {expected}"), message


def test_the_rules_wait_for_the_adaptive_policy(tiny):
    fixed = load_recipe(tiny, [*TORCH4, "optim.name=lamb", "train.batch_growth_epochs=[1]",
                               "train.adaptive.max_batch=64"])
    assert fixed.train.batch_policy == "fixed"


def test_the_section_checks_its_range_when_built_directly():
    with pytest.raises(FieldProblem, match="max_batch: expected at least train.adaptive.min_batch"):
        AdaptiveConfig(min_batch=512, max_batch=256)
    assert AdaptiveConfig(min_batch=512).max_batch == 0  # 0 = 8 x G0, resolved by the Recipe


def test_show_refuses_a_bad_adaptive_recipe_file_in_one_line_exit_2(cli, write, tiny):
    bad = write("bad.yaml", "base: tiny.yaml\ntrain: {batch_policy: adaptive}\noptim: {name: lamb}\n")
    code, out, err = cli("show", bad)
    assert code == 2 and not out and err.count("\n") == 1 and "Traceback" not in err
    assert f"{bad}: train.batch_policy: adaptive scales the lr by AdaScale's gain" in err


def test_show_lists_the_batches_the_policy_may_choose_and_their_split(cli, tiny):
    import yaml

    code, out, _ = cli("show", tiny, "--set", "cluster.backend=torch", "--set", "cluster.workers=2",
                       "--set", "data.batch_size=16", "--set", "train.batch_policy=adaptive",
                       "--set", "train.adaptive.max_batch=1000")
    assert code == 0
    table = yaml.safe_load(out)["adaptive"]
    examples = yaml.safe_load(out)["derived"]["train_examples"]
    # 32 x 2^k up to the max, and the max; none above half the training examples (an epoch of two steps)
    expected = [b for b in (32, 64, 128, 256, 512, 1000) if b <= examples // 2]
    assert [row["global_batch"] for row in table] == expected
    for row in table:  # each split on 2 workers in micro-batches of at most 16
        assert row["per_worker_batch"] <= 16
        assert 2 * row["per_worker_batch"] * row["accumulation_steps"] >= row["global_batch"]
        assert row["steps_per_epoch"] == examples // row["global_batch"]
