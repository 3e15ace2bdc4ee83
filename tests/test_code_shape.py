"""The code stays readable in pieces (issue 28): no module in trainer/, optim/, cluster/ over 400 lines, no class
over 250, no function over 60 outside the model definitions (trainer/models), and the step on one screen."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules() -> list[Path]:
    return sorted(p for part in ("trainer", "optim", "cluster") for p in (REPO / part).rglob("*.py")
                  if "__pycache__" not in p.parts)


def spans(path: Path, kinds: tuple) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree) if isinstance(node, kinds)]


def test_modules_classes_and_functions_stay_small():
    too_long = []
    for path in modules():
        rel = path.relative_to(REPO)
        if (lines := len(path.read_text().splitlines())) > 400:
            too_long.append(f"{rel}: {lines} lines")
        too_long += [f"{rel}: class {name} {n} lines" for name, n in spans(path, (ast.ClassDef,)) if n > 250]
        if "models" not in rel.parts:
            too_long += [f"{rel}: {name}() {n} lines"
                         for name, n in spans(path, (ast.FunctionDef, ast.AsyncFunctionDef)) if n > 60]
    assert too_long == []


def test_the_step_fits_on_one_screen():
    (length,) = [n for name, n in spans(REPO / "trainer" / "step" / "core.py", (ast.FunctionDef,))
                 if name == "train_step"]
    assert length <= 60
