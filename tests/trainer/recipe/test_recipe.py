"""Recipe loading: inheritance, overrides, and every bad-input case (one line, file + key, exit 2)."""

import dataclasses

import pytest

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe


def test_base_chain_deep_merges_relative_to_file(write):
    write("bases/root.yaml", """
        seed: 3
        model: {name: resnet_small}
        data: {name: digits, batch_size: 16}
        train: {epochs: 1, label_smoothing: 0.1}
        optim: {base_lr: 0.1, momentum: 0.8}
    """)
    write("bases/mid.yaml", """
        base: root.yaml
        optim: {momentum: 0.95}
    """)
    leaf = write("leaf.yaml", """
        base: bases/mid.yaml
        data: {batch_size: 64}
    """)
    r = load_recipe(leaf)
    assert (r.seed, r.data.batch_size, r.data.name) == (3, 64, "digits")
    assert (r.optim.base_lr, r.optim.momentum) == (0.1, 0.95)
    assert r.train.label_smoothing == 0.1
    assert dataclasses.is_dataclass(r.optim)


def test_override_sets_typed_values(tiny):
    r = load_recipe(tiny, ["optim.base_lr=0.5", "train.max_steps=7", "optim.nesterov=true",
                           "model.kwargs.widths=[4, 8, 8]"])
    assert r.optim.base_lr == 0.5 and isinstance(r.optim.base_lr, float)
    assert r.train.max_steps == 7 and r.optim.nesterov is True
    assert r.model.kwargs["widths"] == [4, 8, 8]


def test_int_accepted_for_float(write, tiny):
    assert load_recipe(tiny, ["optim.base_lr=1"]).optim.base_lr == 1.0


BAD_FILES = [
    ("unknown key", "tiny", "optim: {base_lrr: 0.1}", "optim.base_lrr", "did you mean 'base_lr'"),
    ("wrong type", "tiny", "data: {batch_size: many}", "data.batch_size", "expected an integer"),
    ("bool is not int", "tiny", "data: {batch_size: true}", "data.batch_size", "expected an integer"),
    ("out of range", "tiny", "train: {label_smoothing: 1.5}", "train.label_smoothing", "< 1.0"),
    ("negative", "tiny", "data: {batch_size: 0}", "data.batch_size", ">= 1"),
    ("bad choice", "tiny", "train: {precision: fp8}", "train.precision", "expected one of"),
    ("unknown model", "tiny", "model: {name: resnet_smal}", "model.name", "resnet_small"),
    ("section not mapping", "tiny", "optim: 3", "optim", "expected a mapping"),
]


@pytest.mark.parametrize("case,base,extra,key,needle", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_value_names_file_and_key(write, tiny, case, base, extra, key, needle):
    path = write("child.yaml", f"base: tiny.yaml\n{extra}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}: "), msg
    assert needle in msg


def test_missing_required_key(write):
    path = write("r.yaml", "model: {name: resnet_small}\ndata: {name: digits}\ntrain: {epochs: 1}\noptim: {base_lr: 0.1}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: data\.batch_size: missing required key"):
        load_recipe(path)


def test_error_names_the_base_file_that_set_the_bad_value(write, tiny):
    write("base_bad.yaml", "base: tiny.yaml\noptim: {momentum: 2.0}\n")
    leaf = write("leaf.yaml", "base: base_bad.yaml\n")
    with pytest.raises(RecipeError, match=r"base_bad\.yaml: optim\.momentum: expected a value < 1.0"):
        load_recipe(leaf)


@pytest.mark.parametrize("text,needle", [
    ("", "empty recipe file"),
    ("- 1\n- 2\n", "expected a mapping at the top level, got list"),
    ("model: {name: x\ndata: [\n", "invalid YAML at line"),
])
def test_file_level_errors(write, text, needle):
    path = write("bad.yaml", text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_yaml_reports_line_and_column(write):
    path = write("bad.yaml", "seed: 1\nmodel:\n  name: [unclosed\n")
    with pytest.raises(RecipeError, match=r"line \d+, column \d+"):
        load_recipe(path)


def test_missing_base_and_cycle(write):
    missing = write("m.yaml", "base: nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"m\.yaml: base: base recipe 'nowhere.yaml' not found"):
        load_recipe(missing)
    write("a.yaml", "base: b.yaml\n")
    b = write("b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="inheritance cycle"):
        load_recipe(b)


def test_recipe_path_not_found(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override,needle", [
    ("optim.base_lrr=0.1", "optim.base_lrr: unknown key (did you mean 'base_lr'?)"),
    ("nosection.x=1", "nosection: unknown key"),
    ("optim.base_lr=[1,", "optim.base_lr: cannot parse value"),
    ("optim.base_lr=abc", "optim.base_lr: expected a number, got 'abc'"),
    ("optim.base_lr", "expected KEY=VALUE"),
])
def test_bad_overrides(tiny, override, needle):
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny, [override])
    assert needle in str(err.value) and "--set" in str(err.value)
    assert "\n" not in str(err.value)


def test_warmup_steps_and_epochs_are_exclusive(tiny):
    with pytest.raises(RecipeError, match="optim.warmup_steps: set warmup_steps or warmup_epochs, not both"):
        load_recipe(tiny, ["optim.warmup_steps=5"])


def test_unknown_torchvision_model_lists_close_matches(tiny):
    with pytest.raises(RecipeError, match="close matches: torchvision:resnet50"):
        load_recipe(tiny, ["model.name=torchvision:resnet5O"])


def test_torchvision_and_timm_names_accepted(tiny):
    assert load_recipe(tiny, ["model.name=torchvision:resnet18"]).model.name == "torchvision:resnet18"
    assert load_recipe(tiny, ["model.name=timm:resnet18"]).model.name == "timm:resnet18"
