"""Recipe files → typed Recipe: read (safe YAML), inherit (`base:`), override (`--set`), validate.

Every key remembers where its value came from (a file, or a `--set`), so an
error names the place the user has to edit.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.fields import FieldProblem, build_section, field_type
from bigbatch.trainer.recipe.plan import recipe_global_batch
from bigbatch.trainer.recipe.schema import Recipe

Sources = dict[str, str]  # dotted key -> "file" or "--set key=value"


def _read_yaml(path: Path, included_from: str | None = None) -> dict:
    where = f" (base of {included_from})" if included_from else ""
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found{where}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        pos = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise RecipeError(f"{path}: invalid YAML at {pos}{e.problem}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise RecipeError(f"{path}: empty recipe file (expected a mapping of sections such as model:, data:, train:)")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _record(data: Mapping, source: str, sources: Sources, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        sources[dotted] = source
        if isinstance(value, Mapping):
            _record(value, source, sources, f"{dotted}.")


def _merge(base: dict, child: Mapping) -> dict:
    """Deep merge: mappings merge key by key, anything else in `child` replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(path: Path, chain: tuple[Path, ...], sources: Sources) -> dict:
    """Read `path` and everything it inherits from, base first."""
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real))
        raise RecipeError(f"{path}: base: inheritance cycle: {cycle}")
    data = _read_yaml(path, included_from=str(chain[-1]) if chain else None)
    base_ref = data.pop("base", None)
    merged: dict = {}
    if base_ref is not None:
        if not isinstance(base_ref, str) or not base_ref:
            raise RecipeError(f"{path}: base: expected a recipe file path (string), got {base_ref!r}")
        base_path = path.parent / base_ref
        if not base_path.is_file():
            raise RecipeError(f"{path}: base: base recipe {base_ref!r} not found (looked for {base_path})")
        merged = _resolve(base_path, (*chain, real), sources)
    _record(data, str(path), sources)
    return _merge(merged, data)


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', parsed value); the value is read as YAML (so 0.1, true, [1, 2] work)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text}: expected KEY=VALUE, e.g. --set optim.base_lr=0.2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"--set {text}: {key}: cannot parse value {raw!r}: {problem}") from None
    return key, value


def apply_overrides(data: dict, overrides: Sequence[str], sources: Sources) -> dict:
    for text in overrides:
        key, value = parse_override(text)
        try:
            field_type(Recipe, key)
        except FieldProblem as p:
            raise RecipeError(f"--set {text}: {p.key}: {p.message}") from None
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        sources[key] = f"--set {text}"
    return data


def source_of(key: str, sources: Sources, default: str) -> str:
    """The file or override that set `key` (or its nearest parent section)."""
    parts = key.replace("[", ".[").split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n]).replace(".[", "[")
        if candidate in sources:
            return sources[candidate]
    return default


def load_raw(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict, Sources]:
    """The merged, overridden mapping and where each key came from (no validation)."""
    path = Path(path)
    sources: Sources = {}
    data = _resolve(path, (), sources)
    data = apply_overrides(data, overrides, sources)
    return data, sources


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, inherit, override and validate a recipe; any problem raises one-line RecipeError."""
    data, sources = load_raw(path, overrides)
    try:
        recipe = build_section(Recipe, data)
    except FieldProblem as p:
        raise RecipeError(f"{source_of(p.key, sources, str(path))}: {p.key}: {p.message}") from None
    check_names(recipe, sources, str(path))
    return recipe


def check_names(recipe: Recipe, sources: Sources, default: str) -> None:
    """Checks that need more than one field or a registry lookup."""
    from bigbatch.trainer.models import registry

    def fail(key: str, message: str) -> None:
        raise RecipeError(f"{source_of(key, sources, default)}: {key}: {message}")

    problem = registry.check_name(recipe.model.name)
    if problem:
        fail("model.name", problem)
    if recipe.data.name == "folder" and not recipe.data.root:
        fail("data.root", "the folder data set needs data.root")
    opt, train = recipe.optim, recipe.train
    if opt.warmup_steps and opt.warmup_epochs:
        fail("optim.warmup_steps", "set warmup_steps or warmup_epochs, not both")
    if opt.schedule == "multistep" and not opt.decay_epochs:
        fail("optim.decay_epochs", "the multistep schedule needs a list of epochs, e.g. [30, 60, 80]")
    if opt.decay_epochs != sorted(opt.decay_epochs) or any(e <= 0 for e in opt.decay_epochs):
        fail("optim.decay_epochs", f"expected increasing positive epochs, got {opt.decay_epochs}")
    if opt.schedule == "step" and opt.decay_every_epochs <= 0:
        fail("optim.decay_every_epochs", "the step schedule needs decay_every_epochs > 0")
    betas = opt.lamb.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        fail("optim.lamb.betas", f"expected two values in [0, 1), got {betas}")
    if recipe.bn.sync == "group" and recipe.cluster.workers % recipe.bn.group_size:
        fail("bn.group_size", f"must divide cluster.workers ({recipe.cluster.workers}), got {recipe.bn.group_size}")
    data = recipe.data
    decoded_only = [k for k, on in (("data.augment", data.augment != "none"), ("data.random_erasing",
                    data.random_erasing), ("data.eval_image_size", data.eval_image_size),
                    ("data.eval_crop_pct", data.eval_crop_pct != 0.875),
                    ("data.image_size_schedule.start", data.image_size_schedule.start)) if on]
    if decoded_only and data.name not in ("folder", "shards"):
        fail(decoded_only[0], f"works on decoded images (data.name folder or shards), not on {data.name}")
    if data.aug_repeats > 1 and data.name == "shards":
        fail("data.aug_repeats", "needs an indexed data set (folder, mnist, fashion_mnist, digits, synthetic); shards "
                                 "stream each record once per epoch")
    if recipe_global_batch(recipe) % data.aug_repeats:
        fail("data.aug_repeats", f"must divide the global batch {recipe_global_batch(recipe)} (cluster.workers x "
                                 f"data.batch_size x train.accumulation_steps), got {data.aug_repeats}")
    sizes = data.image_size_schedule
    if sizes.start and not (sizes.end and sizes.start_epoch < sizes.end_epoch <= train.epochs):
        fail("data.image_size_schedule", f"expected start and end sizes and start_epoch < end_epoch <= "
                                         f"train.epochs ({train.epochs}), got {dataclasses.asdict(sizes)}")
    if recipe.cluster.elastic and recipe.cluster.backend == "horovod":
        fail("cluster.min_workers", "an elastic group needs cluster.backend: torch (Ray Train); horovod runs a "
                                    "fixed group")
    if recipe.model.name == "spos_supernet" and train.compile:
        fail("train.compile", "the supernet trains another path every step, and each path would compile anew")
    if recipe.model.name == "spos_supernet" and recipe.model.head != "linear":
        fail("model.head", "the supernet draws its path itself; another head around it would hide that")
    if recipe.model.norm != "batch" and recipe.bn.sync != "none":
        fail("bn.sync", f"cross-replica sync is for BatchNorm; model.norm is {recipe.model.norm!r} (set bn.sync: none)")
    if train.ema.best == "ema" and not train.ema.decay:
        fail("train.ema.best", "'ema' needs an average: set train.ema.decay (e.g. 0.9998)")
    growth = train.batch_growth_epochs
    if growth != sorted(set(growth)) or any(not 0 < e < train.epochs for e in growth):
        fail("train.batch_growth_epochs", f"expected increasing epochs between 1 and train.epochs-1 "
                                          f"({train.epochs - 1}), got {growth}")
