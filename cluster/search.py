"""`bigbatch search`: Single-Path One-Shot architecture search on the cluster (Guo et al. 2019).

Stage 1 trains the supernet (`model.name: spos_supernet`) like any recipe, into OUT/supernet (or takes
`search.supernet_run`), resumable as any run. Stage 2 runs the evolution of trainer/search/evolution.py:
each generation's candidates (and as many uniform random ones under the same caps, the baseline) are scored
by `search.workers` Ray actors side by side - each holds the supernet and the data once and scores its share:
BatchNorm recalibration on training images, then top-1 on `data.holdout`. After every generation the whole
state (scores, the next candidates, both generators) is written atomically to OUT/search_state.json, so a
killed search resumes at the generation it was in and draws what an uninterrupted one draws.

Outputs: OUT/search.jsonl, OUT/best.yaml (trains the best candidate from scratch), OUT/report/, and with
`search.verify` the ranking check (cluster/search_verify.py): OUT/verify.json and OUT/verify/.
"""

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bigbatch.trainer.atomic import write_atomic, write_json_atomic
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.run.checkpoint import CheckpointDir
from bigbatch.trainer.search import evolution
from bigbatch.trainer.search.latency import LatencyTable
from bigbatch.trainer.search.results import best_recipe_text, best_row, write_candidates, write_report

STATE = "search_state.json"
LATENCY = "latency.json"
LATENCY_TIMING = {"warmup": 2, "repeats": 7, "min_seconds": 0.02}  # median of >= 7 passes per block
LATENCY_CHECKS = 5  # whole networks measured end to end against the table's sum


class ScoringActor:
    """One scoring worker: the supernet and the data, loaded once; `score` takes a share of a generation."""

    def __init__(self, recipe: Recipe, checkpoint: str, device: str, threads: int):
        from bigbatch.trainer.search.score import CandidateScorer

        torch.set_num_threads(max(1, threads))
        self.scorer = CandidateScorer(recipe, Path(checkpoint), device)

    def score(self, candidates: list[list[int]]) -> dict:
        started = time.time()
        scores = [self.scorer.score(c) for c in candidates]
        return {"scores": scores, "pid": os.getpid(), "start": started, "end": time.time()}

    def device_name(self) -> str:
        from bigbatch.trainer.models.speed import device_name

        return device_name(self.scorer.device)

    def latency_table(self, batches: list[int], check_paths: list[list[int]]) -> dict:
        """The per-block latency table of the supernet on this actor's device (search.max_latency_ms)."""
        from bigbatch.trainer.search.latency import measure_latency_table

        scorer = self.scorer
        table = measure_latency_table(scorer.model, scorer.data.channels, scorer.data.image_size, batches,
                                      scorer.device, check_paths, **LATENCY_TIMING)
        return dataclasses.asdict(table)


def check_search_recipe(recipe: Recipe) -> None:
    if recipe.model.name != "spos_supernet":
        raise RecipeError(f"model.name: bigbatch search trains and searches a supernet: expected spos_supernet, "
                          f"got {recipe.model.name!r}")
    if not recipe.data.holdout:
        raise RecipeError("data.holdout: candidates are scored on training examples set apart (never the test "
                          "set): set data.holdout, e.g. 10 percent of the training set")


def supernet_checkpoint(recipe: Recipe, out: Path, verbose: bool) -> Path:
    """Stage 1: the newest verified checkpoint of the trained supernet (training or resuming it first)."""
    if recipe.search.supernet_run:
        run = Path(recipe.search.supernet_run)
    else:
        from bigbatch.cluster.launch import launch

        run = out / "supernet"
        print(f"bigbatch search: stage 1: training the supernet into {run}", file=sys.stderr, flush=True)
        launch(recipe, run, resume="auto" if (run / "checkpoints").is_dir() else None, verbose=verbose)
    found = CheckpointDir(run / "checkpoints").newest_verified()
    if found is None:
        raise RecipeError(f"{run}: search.supernet_run: no valid checkpoint (expected a run of a spos_supernet "
                          "recipe)")
    return found[0]


class SearchSpace:
    """The supernet's space, its multiply-adds and parameters per path, and the cap."""

    def __init__(self, recipe: Recipe, latency: LatencyTable | None = None):
        from bigbatch.trainer.data import load_data
        from bigbatch.trainer.run.build import build_model

        data = load_data(recipe.data, recipe.seed)
        with torch.device("meta"):
            self.supernet = build_model(recipe, data, torch.device("meta"))
        self.image_size, self.cap = data.image_size, recipe.search.max_macs_m * 1e6
        self.latency, self.cap_ms = None, 0.0
        self.space = evolution.Space(len(self.supernet.blocks), 4, self.allowed)
        if self.cap and self.macs(self.smallest()) > self.cap:
            raise RecipeError(f"search.max_macs_m: {recipe.search.max_macs_m:g}M is below the smallest network of "
                              f"the space ({self.macs(self.smallest()) / 1e6:.2f}M)")
        if latency is not None:
            self.add_latency(latency, recipe.search.max_latency_ms)

    def add_latency(self, latency: LatencyTable, cap_ms: float) -> None:
        """Record the table's latencies and cap candidates at `cap_ms` (batch 1; 0 = no cap)."""
        self.latency, self.cap_ms = latency, cap_ms
        fastest = [int(np.argmin(row)) for row in latency.blocks_ms["1"]]
        if cap_ms and latency.predict(fastest) > cap_ms:
            raise RecipeError(f"search.max_latency_ms: {cap_ms:g} ms is below the fastest network of the space "
                              f"({latency.predict(fastest):.2f} ms at batch 1 on {latency.device})")

    def allowed(self, candidate) -> bool:
        return (not self.cap or self.macs(candidate) <= self.cap) and \
            (not self.cap_ms or self.latency.predict(candidate) <= self.cap_ms)

    def measures(self, candidate) -> dict:
        """What search.jsonl records of a candidate besides its score."""
        out = {"macs": self.macs(candidate), "params": self.params(candidate)}
        if self.latency is not None:
            out.update({f"latency_ms_b{b}": round(self.latency.predict(candidate, b), 4) for b in self.latency.batches})
        return out

    def macs(self, candidate) -> int:
        return self.supernet.path_macs(list(candidate), self.image_size)

    def params(self, candidate) -> int:
        return self.supernet.path_params(list(candidate))

    def smallest(self) -> tuple[int, ...]:
        _, table = self.supernet.macs_table(self.image_size)
        return tuple(int(i) for i in table.argmin(axis=1))


def initial_state(recipe: Recipe, space: evolution.Space) -> dict:
    evolving, baseline = np.random.default_rng([recipe.seed, 1]), np.random.default_rng([recipe.seed, 2])
    first = evolution.random_candidates(evolving, space, recipe.search.population, set())
    random = evolution.random_candidates(baseline, space, len(first), set()) if recipe.search.random_baseline else []
    return {"generation": 0, "pending": {"evolution": first, "random": random}, "rows": [],
            "rng": {"evolution": evolution.generator_state(evolving), "random": evolution.generator_state(baseline)}}


def advance(state: dict, recipe: Recipe, space: evolution.Space) -> None:
    """Draw the next generation's candidates (both methods) after generation `state['generation']` was scored."""
    sizes = evolution.Sizes(recipe.search.population, recipe.search.parents, recipe.search.mutations,
                            recipe.search.mutation_prob, recipe.search.crossovers)
    rows = state["rows"]
    evolving = evolution.restore_generator(state["rng"]["evolution"])
    baseline = evolution.restore_generator(state["rng"]["random"])
    scored = [(tuple(r["choices"]), r["score"]) for r in rows if r["method"] == "evolution"]
    seen = {c for c, _ in scored}
    nxt = evolution.next_generation(evolving, space, sizes, scored, seen)
    random = []
    if recipe.search.random_baseline:
        seen_random = {tuple(r["choices"]) for r in rows if r["method"] == "random"}
        random = evolution.random_candidates(baseline, space, len(nxt), seen_random)
    state["pending"] = {"evolution": nxt, "random": random}
    state["rng"] = {"evolution": evolution.generator_state(evolving), "random": evolution.generator_state(baseline)}


def score_in_parallel(actors: list, candidates: list) -> tuple[list[float], list[dict]]:
    """Candidates dealt round-robin to the actors, scored side by side; (scores in order, each actor's timing)."""
    import ray

    shares = [candidates[i::len(actors)] for i in range(len(actors))]
    results = ray.get([actor.score.remote([list(c) for c in share]) for actor, share in zip(actors, shares,
                                                                                           strict=True) if share])
    scores: list[float] = [0.0] * len(candidates)
    for i, result in enumerate(results):
        scores[i::len(actors)] = result["scores"]
    return scores, [{k: v for k, v in r.items() if k != "scores"} for r in results]


def run_search(recipe: Recipe, out: Path, resume: str | None = None, verbose: bool = False) -> dict:
    """Both stages; returns the best evolution row (raises RecipeError on bad input)."""
    check_search_recipe(recipe)
    out = Path(out).resolve()
    state_path = _state_path(out, resume)
    checkpoint = supernet_checkpoint(recipe, out, verbose)
    space = SearchSpace(recipe)  # the multiply-add cap checked before a Ray starts (latency: once measured)
    import ray

    started_here = _connect_for_actors(recipe, verbose)
    latency = None
    try:
        actors = start_actors(recipe, checkpoint)
        if recipe.search.max_latency_ms:
            latency = latency_table(recipe, out, actors[0], space)
            space.add_latency(latency, recipe.search.max_latency_ms)
        state = _load_or_start_state(recipe, space, state_path)
        write_atomic(out / "recipe.yaml", _recipe_yaml(recipe))
        while state["generation"] < recipe.search.generations:
            run_generation(state, recipe, space, actors, out)
    finally:
        if started_here:
            ray.shutdown()
    verified = None
    if recipe.search.verify:
        from bigbatch.cluster.search_verify import verify_ranking

        verified = verify_ranking(recipe, out, state, state_path, verbose)
    return finish(recipe, out, state, verified, (latency.summary(),) if latency else ())


def _state_path(out: Path, resume: str | None) -> Path:
    """OUT/search_state.json, OUT made first; an OUT that holds a search is refused unless resumed."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    if state_path.is_file() and resume != "auto":
        raise RecipeError(f"{out}: --out: holds a search ({STATE}); pass --resume auto to continue it, or choose "
                          "another --out")
    return state_path


def _connect_for_actors(recipe: Recipe, verbose: bool) -> bool:
    """Connect to (or start) Ray for the scoring actors; whether Ray was started here (to shut it down)."""
    from bigbatch.cluster.ray_launch import connect

    # an embedded Ray is sized for the scoring actors (search.workers), not for the supernet's training group:
    # a fixed group of Ray workers (the recipe's own backend may be the one-worker local one)
    actors_wanted = recipe.search.workers or recipe.cluster.workers
    actor_group = dataclasses.replace(recipe.cluster, backend="torch", workers=actors_wanted, min_workers=0)
    return connect(actor_group, verbose)


def _load_or_start_state(recipe: Recipe, space: SearchSpace, state_path: Path) -> dict:
    """The saved state of a resumed search, else generation 0's (written at once)."""
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        print(f"bigbatch search: resuming at generation {state['generation']}", file=sys.stderr, flush=True)
    else:
        state = initial_state(recipe, space.space)
        write_json_atomic(state_path, state)
    return state


def run_generation(state: dict, recipe: Recipe, space: SearchSpace, actors: list, out: Path) -> None:
    """Score generation `state['generation']` on the actors, record its rows and timing, draw the next one
    (unless it was the last), then write the state, OUT/search.jsonl and a progress line."""
    generation_started = time.perf_counter()
    pending = [("evolution", c) for c in state["pending"]["evolution"]] + \
              [("random", c) for c in state["pending"]["random"]]
    scores, timing = score_in_parallel(actors, [c for _, c in pending])
    for (method, candidate), score in zip(pending, scores, strict=True):
        state["rows"].append({"generation": state["generation"], "method": method,
                              "choices": list(candidate), **space.measures(candidate), "score": score})
    state["generation"] += 1
    state.setdefault("timing", []).append({"generation": state["generation"] - 1, "actors": timing,
                                           "wall_s": time.perf_counter() - generation_started})
    if state["generation"] < recipe.search.generations:
        advance(state, recipe, space.space)
    write_json_atomic(out / STATE, state)
    write_candidates(out / "search.jsonl", state["rows"])
    best = best_row(state["rows"])
    print(f"bigbatch search: generation {state['generation']}/{recipe.search.generations}: best held-out "
          f"top-1 {best['score']:.4f} ({best['macs'] / 1e6:.2f}M multiply-adds), "
          f"{time.perf_counter() - generation_started:.1f} s", file=sys.stderr, flush=True)


def latency_table(recipe: Recipe, out: Path, actor, space: SearchSpace) -> LatencyTable:
    """OUT/latency.json when it was measured on the scoring actors' device, else measured there now (batch 1
    and data.batch_size; checked against LATENCY_CHECKS whole networks of `space`, under its multiply-add
    cap)."""
    import ray

    path, device = out / LATENCY, ray.get(actor.device_name.remote())
    if path.is_file():
        table = LatencyTable(**json.loads(path.read_text()))
        if table.device == device:
            return table
    checks = evolution.random_candidates(np.random.default_rng([recipe.seed, 4]), space.space, LATENCY_CHECKS, set())
    print(f"bigbatch search: measuring the latency table on {device}", file=sys.stderr, flush=True)
    batches = sorted({1, recipe.data.batch_size})
    table = LatencyTable(**ray.get(actor.latency_table.remote(batches, [list(c) for c in checks])))
    write_json_atomic(path, dataclasses.asdict(table))
    print(f"bigbatch search: {table.summary()}", file=sys.stderr, flush=True)
    return table


def start_actors(recipe: Recipe, checkpoint: Path) -> list:
    import ray

    cfg = recipe.cluster
    count = recipe.search.workers or cfg.workers
    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    remote = ray.remote(ScoringActor).options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker)
    return [remote.remote(recipe, str(checkpoint), device, int(cfg.cpus_per_worker)) for _ in range(count)]


def finish(recipe: Recipe, out: Path, state: dict, verified: dict | None = None, notes: tuple[str, ...] = ()) -> dict:
    """best.yaml (checked by the recipe loader with the search.retrain overrides) and the report."""
    from bigbatch.trainer.recipe import load_recipe

    best = best_row(state["rows"])
    source = str(out / "recipe.yaml")
    path = out / "best.yaml"
    write_atomic(path, best_recipe_text(recipe, best, source))
    if recipe.search.retrain:
        resolved = load_recipe(path, recipe.search.retrain)
        header = "".join(line + "\n" for line in path.read_text().splitlines() if line.startswith("#"))
        write_atomic(path, header + f"# with search.retrain: {recipe.search.retrain}\n" +
                     _recipe_yaml(resolved, drop_search=True))
    else:
        load_recipe(path, [])  # the found recipe must load
    write_report(out, state["rows"], f"SPOS search: {out.name}", verified, notes)
    return best


def _recipe_yaml(recipe: Recipe, drop_search: bool = False) -> str:
    import yaml

    data = dataclasses.asdict(recipe)
    if drop_search:
        data.pop("search")
    return yaml.safe_dump(data, sort_keys=False)
