"""Every rule that needs only the recipe fires at load (issue 28, item 6): the rules that used to fire only at
launch (cluster/launch.py, ray_launch.py) or only on a worker (the plan, the data loaders, the search command)
now refuse the recipe in `load_recipe`, one line naming the file and the key. Non-finite numbers are refused in
every float key."""

import math

import pytest

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.fields import walk_fields
from bigbatch.trainer.recipe.schema import ClusterConfig, LambConfig, OptimConfig, Recipe


def refused(path, overrides, key: str) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    assert f": {key}: " in message, message
    return message


# (what, overrides, key, the expected message after "KEY: ")
RULES = [
    ("local backend runs one worker (was cluster/launch.py)", ["cluster.workers=2"], "cluster.workers",
     "the 'local' backend runs exactly 1 worker, got 2"),
    ("horovod takes whole GPUs (was cluster/launch.py)",
     ["cluster.backend=horovod", "cluster.workers=2", "cluster.gpus_per_worker=0.5"], "cluster.gpus_per_worker",
     "Horovod gives each worker whole GPUs (NCCL cannot share one between ranks); got 0.5, expected 0, 1, 2, ..."),
    ("address needs host and port (was cluster/ray_launch.py)",
     ["cluster.backend=torch", "cluster.workers=2", "cluster.address=headnode"], "cluster.address",
     "expected HOST:PORT or SCHEME://HOST:PORT, got 'headnode'"),
    ("min_workers at most workers (was trainer/recipe/plan.py)",
     ["cluster.backend=torch", "cluster.workers=4", "cluster.min_workers=5"], "cluster.min_workers",
     "5 is more than cluster.workers (4)"),
    ("mnist needs a root (was trainer/data)", ["data.name=mnist"], "data.root",
     "the mnist data set needs data.root, the directory of its IDX files"),
    ("shards need a root (was trainer/data/shards)", ["data.name=shards"], "data.root",
     "the shards data set needs data.root, the directory or URI of index.json"),
    ("holdout needs indexed data (was trainer/data/holdout.py)", ["data.name=shards", "data.root=x",
                                                                 "data.holdout=10"], "data.holdout",
     "needs an indexed data set (digits, mnist, fashion_mnist, synthetic, folder); streamed shards cannot set "
     "examples apart"),
    ("parents at most the population (was cluster/search.py)", ["search.population=10", "search.parents=20"],
     "search.parents", "20 is more than search.population (10)"),
    ("bn groups divide every elastic size (was a ValueError on the worker)",
     ["cluster.backend=torch", "cluster.workers=4", "cluster.min_workers=2", "data.batch_size=3",
      "bn.sync=group", "bn.group_size=2"], "bn.group_size",
     "must divide every world size the elastic group may have (2, 3, 4), got 2"),
]


@pytest.mark.parametrize("case,overrides,key,expected", RULES, ids=[r[0] for r in RULES])
def test_a_rule_that_needs_only_the_recipe_fires_at_load(tiny, case, overrides, key, expected):
    message = refused(tiny, overrides, key)
    # the --set that set the key, or (a key left unset) the file that holds its section
    assert message.startswith(("--set ", f"{tiny}: ")) and message.endswith(f": {key}: {expected}"), message


def test_the_error_names_the_file_that_set_the_key(write, tiny):
    child = write("child.yaml", "base: tiny.yaml\ncluster: {workers: 3}\n")
    assert refused(child, [], "cluster.workers") == \
        f"{child}: cluster.workers: the 'local' backend runs exactly 1 worker, got 3"


def test_what_the_rules_allow_still_loads(tiny):
    assert load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=4"]).cluster.workers == 4
    assert load_recipe(tiny, ["cluster.backend=horovod", "cluster.workers=2", "cluster.gpus_per_worker=1"])
    for address in ("", "auto", "local", "10.0.0.1:6379", "ray://head:10001"):
        assert load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=2", f"cluster.address={address}"])
    elastic = load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=4", "cluster.min_workers=1",
                                 "data.batch_size=12", "bn.sync=group", "bn.group_size=1"])
    assert elastic.cluster.elastic
    assert load_recipe(tiny, ["data.name=mnist", "data.root=/data/mnist"]).data.root == "/data/mnist"


def test_a_section_built_directly_validates_too():
    """As Ray Train's ScalingConfig: the rules live with the section, so constructing one checks them."""
    with pytest.raises(RecipeError, match="workers: the 'local' backend runs exactly 1 worker, got 2"):
        ClusterConfig(workers=2)
    with pytest.raises(RecipeError, match=r"betas: expected two values in \[0, 1\), got \[0.9\]"):
        LambConfig(betas=[0.9])
    with pytest.raises(RecipeError, match="warmup_steps: set warmup_steps or warmup_epochs, not both"):
        OptimConfig(base_lr=0.1, warmup_steps=5, warmup_epochs=1.0)
    assert ClusterConfig(workers=2, backend="torch").workers == 2


FLOAT_KEYS = [key for key, _, tp in walk_fields(Recipe) if tp is float]


def test_there_are_float_keys_to_check():
    assert {"optim.base_lr", "cluster.cpus_per_worker", "train.ema.decay"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("spelling", ["nan", ".nan", "NaN", "inf", ".inf", "-inf", "-.inf", "+.inf", "1e999"])
def test_a_non_finite_number_is_refused_in_every_float_key(tiny, spelling):
    for key in FLOAT_KEYS:
        message = refused(tiny, [f"{key}={spelling}"], key)
        assert message.startswith(f"--set {key}={spelling}: {key}: expected a finite number, got "), message


@pytest.mark.parametrize("text,key", [
    ("optim: {base_lr: .nan}", "optim.base_lr"),
    ("optim: {momentum: -.inf}", "optim.momentum"),
    ("train: {clip_grad: .inf}", "train.clip_grad"),
    ("optim: {decay_epochs: [30, .nan]}", "optim.decay_epochs[1]"),
    ("optim: {lamb: {betas: [0.9, .inf]}}", "optim.lamb.betas[1]"),
    ("optim: {end_lr: 1" + "0" * 400 + "}", "optim.end_lr"),
])
def test_non_finite_numbers_in_a_file_name_the_file_and_key(write, tiny, text, key):
    path = write("child.yaml", f"base: tiny.yaml\n{text}\n")
    message = refused(path, [], key)
    assert message.startswith(f"{path}: {key}: expected a finite number, got "), message


def test_finite_floats_still_load(tiny):
    r = load_recipe(tiny, ["optim.base_lr=1e-4", "optim.end_lr=0", "train.clip_grad=1.0e3"])
    assert (r.optim.base_lr, r.optim.end_lr, r.train.clip_grad) == (1e-4, 0.0, 1000.0)
    assert all(math.isfinite(v) for v in (r.optim.base_lr, r.optim.end_lr, r.train.clip_grad))
