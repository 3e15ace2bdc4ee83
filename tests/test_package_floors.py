"""The floors pyproject.toml gives pip are the versions this suite runs on: each direct dependency's floor
equals its pin in constraints.txt (what `make setup` installs), and the installed version satisfies it.
A floor below the tested version would let pip install a release nobody ran (torch>=2.4 allowed releases
without APIs the code calls)."""

import re
from importlib.metadata import version
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([0-9][0-9a-z.]*)", spec)
        assert match, f"pyproject.toml: {spec!r} should be NAME>=VERSION"
        found[match.group(1).lower()] = match.group(3)
    return found


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {name.lower(): v for name, v in (line.split("==") for line in lines if "==" in line)}


def as_tuple(v: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.+]", v))


def test_every_floor_is_the_tested_version_and_is_installed():
    tested = pins()
    for name, floor in floors().items():
        assert name in tested, f"{name} is not pinned in constraints.txt"
        assert floor == tested[name], f"{name}: floor {floor}, but the suite runs on {tested[name]}"
        assert as_tuple(version(name)) >= as_tuple(floor), f"{name} {version(name)} is below its floor {floor}"
