"""The driver of a submitted job: `bigbatch train` of the recipe carried in the job's environment.

`cluster.jobs.submit` resolved and validated the recipe on the submitting
machine; here it is written beside the run (RUN_DIR/submitted.yaml) and trained
with `--resume auto`, so the same job name continues the same run.
"""

import argparse
import os
import sys
from pathlib import Path

from bigbatch.cluster.cli import main as bigbatch
from bigbatch.cluster.jobs import RECIPE_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = run_dir / "submitted.yaml"
    recipe.write_text(os.environ[RECIPE_ENV])
    return bigbatch(["train", str(recipe), "--out", str(run_dir), "--resume", "auto"])


if __name__ == "__main__":
    sys.exit(main())
