"""The install shape: one `bigbatch` namespace in the wheel, imports by that name only, and the architecture's
dependency rules (optim imports nothing of ours; trainer never imports ray, horovod or cluster)."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("trainer", "optim", "cluster")


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """Every module name an import statement in the file names (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.slow
def test_the_wheel_holds_only_the_bigbatch_namespace(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for part in PARTS:
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("bigbatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    assert tops == {"bigbatch", next(t for t in tops if t.endswith(".dist-info"))}, tops
    expected = {f"bigbatch/{p.relative_to(REPO).as_posix()}" for p in python_files(*PARTS)}
    assert expected <= names, sorted(expected - names)[:5]  # a package folder missing from pyproject's list
    assert "bigbatch/__init__.py" not in names  # a namespace: other distributions may add to bigbatch.*
    built = [n for n in names if n.startswith("bigbatch/trainer/data/_roijpeg.") and n.endswith(".so")]
    assert len(built) == 1, "the ROI JPEG decoder (trainer/data/_roijpeg.c) was not compiled into the wheel"
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "bigbatch = bigbatch.cluster.cli:main" in entry


def test_the_code_imports_its_packages_by_the_bigbatch_names():
    """From the repository root `import trainer` would still work (the folder is on sys.path), and would load a
    second copy of every module beside bigbatch.trainer's: two registries, two RecipeError classes."""
    bare = [(path.relative_to(REPO), name) for path in python_files(*PARTS, "tests", "bench")
            for name in imported_modules(path) if name.split(".")[0] in PARTS]
    assert bare == []


def test_public_names_under_the_new_prefix():
    from bigbatch.optim import LARS, scale_lr
    from bigbatch.trainer.models import create_model

    assert callable(create_model) and callable(scale_lr) and issubclass(LARS, __import__("torch").optim.Optimizer)
    assert "trainer" not in sys.modules and "optim" not in sys.modules and "cluster" not in sys.modules


@pytest.mark.parametrize("folder, forbidden", [
    ("optim", ("bigbatch", "ray", "horovod")),
    ("trainer", ("ray", "horovod", "bigbatch.cluster")),
])
def test_dependency_rules(folder, forbidden):
    broken = [(path.relative_to(REPO), name) for path in python_files(folder) for name in imported_modules(path)
              if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert broken == []
