"""DARTS cell genotypes as data (Liu et al. 2019, "DARTS: Differentiable Architecture Search"): parsed and
validated here, built into networks by trainer/models/darts.py.

A genotype lists, for the normal and the reduction cell, two (op, input) pairs per intermediate node:
input 0 and 1 are the outputs of the two previous cells, input k >= 2 is intermediate node k - 2 of the
same cell. A node is the sum of its two edges; the cell's output concatenates the nodes in `*_concat`.

Recipe forms of `model.kwargs.genotype` (see `parse_genotype`):
  - a dict, as in the authors' genotypes file:
      {normal: [[sep_conv_3x3, 0], [sep_conv_3x3, 1], ...], normal_concat: [2, 3, 4, 5],
       reduce: [[max_pool_3x3, 0], ...], reduce_concat: [2, 3, 4, 5]}
    `normal` / `reduce` may also be compact strings "sep_conv_3x3:0 sep_conv_3x3:1 ...";
    a missing `*_concat` means every intermediate node (what all DARTS genotypes use);
  - a compact string "<normal pairs> | <reduce pairs>", e.g. "sep_conv_3x3:0 sep_conv_3x3:1 ... | max_pool_3x3:0 ...",
    concatenating every intermediate node;
  - a published name: "darts_v2".
The op names are those of trainer/models/darts_ops.py; `none` (the zero op) exists only during search and is
rejected in a final genotype.
"""

import re
from dataclasses import dataclass

from bigbatch.trainer.errors import RecipeError

OP_NAMES = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
            "dil_conv_5x5")


@dataclass(frozen=True)
class Genotype:
    """A validated pair of cells: (op, input) pairs, two per intermediate node, and the nodes to concatenate."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def compact(self) -> str:
        """The one-line string form (concat lists omitted when they are every intermediate node)."""
        def cell(pairs: tuple[tuple[str, int], ...]) -> str:
            return " ".join(f"{op}:{i}" for op, i in pairs)

        text = f"{cell(self.normal)} | {cell(self.reduce)}"
        if (self.normal_concat != _all_nodes(self.normal)) or (self.reduce_concat != _all_nodes(self.reduce)):
            text += f" (concat {list(self.normal_concat)} / {list(self.reduce_concat)})"
        return text


def _all_nodes(pairs: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
    return tuple(range(2, 2 + len(pairs) // 2))


# DARTS (second order), the cell of the paper's Figures 4-5 and Tables 1/3, transcribed from the authors'
# genotypes file (`DARTS_V2`).
DARTS_V2: dict = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}
NAMED_GENOTYPES: dict[str, dict] = {"darts_v2": DARTS_V2}

_PAIR = re.compile(r"^([A-Za-z0-9_]+):(-?\d+)$")


def _parse_pairs(data: object, where: str) -> tuple[tuple[str, int], ...]:
    if isinstance(data, str):
        items: list[object] = []
        for k, token in enumerate(data.split()):
            m = _PAIR.match(token)
            if not m:
                raise RecipeError(f"{where}[{k}]: cannot read {token!r} (expected op:input, e.g. 'sep_conv_3x3:0')")
            items.append([m.group(1), int(m.group(2))])
    elif isinstance(data, (list, tuple)):
        items = list(data)
    else:
        raise RecipeError(f"{where}: expected a list of [op, input] pairs or a string 'op:input ...', "
                          f"got {type(data).__name__}")
    if not items:
        raise RecipeError(f"{where}: empty cell (expected two [op, input] pairs per intermediate node)")
    if len(items) % 2:
        raise RecipeError(f"{where}: {len(items)} entries, an odd number "
                          "(expected two [op, input] pairs per intermediate node)")
    pairs = []
    for k, item in enumerate(items):
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise RecipeError(f"{where}[{k}]: expected an [op, input] pair, got {item!r}")
        op, index = item
        if op == "none":
            raise RecipeError(f"{where}[{k}]: op 'none' (the zero op) exists only during search and is not "
                              "allowed in a final genotype")
        if op not in OP_NAMES:
            raise RecipeError(f"{where}[{k}]: unknown op {op!r} (expected one of {', '.join(OP_NAMES)})")
        node = k // 2
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2 + node:
            raise RecipeError(f"{where}[{k}]: input {index!r} of node {node} must be an int in [0, {1 + node}] "
                              "(0, 1: the previous cells; k >= 2: an earlier node of this cell)")
        pairs.append((op, index))
    return tuple(pairs)


def _parse_concat(data: object, pairs: tuple[tuple[str, int], ...], where: str) -> tuple[int, ...]:
    if data is None:
        return _all_nodes(pairs)
    if not isinstance(data, (list, tuple)) or not data:
        raise RecipeError(f"{where}: expected a non-empty list of node indices, got {data!r}")
    last = 1 + len(pairs) // 2
    for k, index in enumerate(data):
        if isinstance(index, bool) or not isinstance(index, int) or not 2 <= index <= last:
            raise RecipeError(f"{where}[{k}]: {index!r} is not an intermediate node (expected an int in [2, {last}])")
    if len(set(data)) != len(data):
        raise RecipeError(f"{where}: repeated node in {list(data)}")
    return tuple(data)


def parse_genotype(data: object, where: str) -> Genotype:
    """Validate a genotype given as data (dict, compact string or published name; see the module docstring).

    `where` is the recipe path of `data` (e.g. "model.kwargs.genotype"); a problem raises RecipeError with one
    line naming the bad entry, e.g. "model.kwargs.genotype.normal[3]: unknown op 'sep_conv_4x4' (...)".
    """
    if isinstance(data, Genotype):
        return data
    if isinstance(data, str):
        if data.strip().lower() in NAMED_GENOTYPES:
            return parse_genotype(NAMED_GENOTYPES[data.strip().lower()], where)
        parts = data.split("|")
        if len(parts) != 2:
            raise RecipeError(f"{where}: expected a published name ({', '.join(NAMED_GENOTYPES)}) or "
                              f"'<normal pairs> | <reduce pairs>', got {data!r}")
        data = {"normal": parts[0], "reduce": parts[1]}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping with normal/reduce (+ normal_concat/reduce_concat), "
                          f"a string or a published name, got {type(data).__name__}")
    keys = ("normal", "normal_concat", "reduce", "reduce_concat")
    unknown = sorted(set(data) - set(keys), key=str)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(keys)})")
    for key in ("normal", "reduce"):
        if key not in data:
            raise RecipeError(f"{where}: missing {key!r}")
    normal = _parse_pairs(data["normal"], f"{where}.normal")
    reduce = _parse_pairs(data["reduce"], f"{where}.reduce")
    return Genotype(normal, _parse_concat(data.get("normal_concat"), normal, f"{where}.normal_concat"),
                    reduce, _parse_concat(data.get("reduce_concat"), reduce, f"{where}.reduce_concat"))
