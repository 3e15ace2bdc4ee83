"""`search.verify`: is the supernet's ranking the ranking of the networks trained alone? The top-k candidates of
the evolution and k of the random baseline are each trained briefly from scratch (`search.verify_retrain`
overrides; on the training set without `data.holdout`'s examples), scored on those held-out examples, and
Kendall's tau between their supernet scores and these stand-alone scores is reported (Guo et al. 2019 argue
one-shot search works because this correlation is high; later papers measure it this way).

Each stand-alone run is an ordinary run directory (OUT/verify/NN-METHOD/) launched on the recipe's backend,
and every finished one is recorded in the search state, so a killed search resumes at the run it was in.
"""

import sys
from pathlib import Path

from bigbatch.trainer.atomic import write_atomic, write_json_atomic
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.run.build import resolve_device
from bigbatch.trainer.run.checkpoint import CheckpointDir
from bigbatch.trainer.search.ranking import kendall_tau
from bigbatch.trainer.search.results import best_recipe_text


def verify_candidates(rows: list[dict], k: int) -> list[dict]:
    """The k best-scoring evolution candidates, then the first k random-baseline ones not among them."""
    evolution = sorted((r for r in rows if r["method"] == "evolution"), key=lambda r: -r["score"])[:k]
    taken = {tuple(r["choices"]) for r in evolution}
    random = [r for r in rows if r["method"] == "random" and tuple(r["choices"]) not in taken][:k]
    return evolution + random


def verify_ranking(recipe: Recipe, out: Path, state: dict, state_path: Path, verbose: bool = False) -> dict:
    """Train and score the candidates not yet done (recorded in state['verify']); write OUT/verify.json."""
    from bigbatch.cluster.launch import launch
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.search.score import standalone_holdout_top1

    done = state.setdefault("verify", [])
    picks = verify_candidates(state["rows"], recipe.search.verify)
    for j, row in enumerate(picks[len(done):], start=len(done)):
        name = f"{j:02d}-{row['method']}"
        path = out / "verify" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, best_recipe_text(recipe, row, str(out / "recipe.yaml"), holdout=recipe.data.holdout))
        alone = load_recipe(path, recipe.search.verify_retrain)
        print(f"bigbatch search: verify {j + 1}/{len(picks)}: training {row['method']} candidate "
              f"{row['choices']} alone", file=sys.stderr, flush=True)
        launch(alone, out / "verify" / name, verbose=verbose)  # a killed one continues (same recipe)
        checkpoint, _ = CheckpointDir(out / "verify" / name / "checkpoints").newest_verified()
        top1 = standalone_holdout_top1(alone, checkpoint, str(resolve_device(alone.train.device)))
        done.append({"method": row["method"], "choices": row["choices"], "supernet": row["score"],
                     "standalone": top1, "run": f"verify/{name}"})
        write_json_atomic(state_path, state)
    result = {"k": recipe.search.verify, "retrain": recipe.search.verify_retrain,
              "kendall_tau": kendall_tau([d["supernet"] for d in done], [d["standalone"] for d in done]),
              "candidates": done}
    write_json_atomic(out / "verify.json", result)
    return result
