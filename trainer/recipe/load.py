"""Recipe files → typed Recipe: read (safe YAML), inherit (`base:`), override (`--set`), validate.

Every key remembers where its value came from (a file, or a `--set`), so an
error names the place the user has to edit.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.fields import FieldProblem, build_section, field_type
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
    """The model name against the registry (a lookup, not a rule of the recipe's fields: those live with their
    sections (schema.py and the section modules it gathers) and have run when the Recipe was built)."""
    from bigbatch.trainer.models import registry

    problem = registry.check_name(recipe.model.name)
    if problem:
        raise RecipeError(f"{source_of('model.name', sources, default)}: model.name: {problem}")
