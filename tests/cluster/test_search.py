"""`bigbatch search` end to end on the bundled digits, on the tests' Ray: supernet, evolution with its random
baseline scored by two Ray actors side by side, a search killed and resumed, and best.yaml trained."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.cluster.conftest import RAY_TEST_ENV, REPO

RECIPE = REPO / "recipes" / "search" / "digits_spos.yaml"
SMALL = ["train.epochs=1", "search.population=4", "search.parents=2", "search.mutations=2", "search.crossovers=1",
         "search.recalibrate_images=128", "search.workers=2"]


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def rows(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "search.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_a_search_scores_in_parallel_resumes_after_a_kill_and_its_best_recipe_trains(ray_cluster, cli, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code, said, err = cli("search", str(RECIPE), "--out", str(straight),
                          *sets([*SMALL, "search.generations=3", "search.verify=1", "search.max_latency_ms=1000"]))
    assert code == 0, err
    state = json.loads((straight / "search_state.json").read_text())
    found = rows(straight)
    assert [r["generation"] for r in found if r["method"] == "evolution"] == [0] * 4 + [1] * 4 + [2] * 4
    assert sum(r["method"] == "random" for r in found) == 12  # the baseline: the same budget
    assert len({tuple(r["choices"]) for r in found if r["method"] == "evolution"}) == 12  # each scored once
    assert all(r["macs"] <= 0.21e6 for r in found)  # search.max_macs_m of the recipe
    # the latency table, measured once by a scoring actor: every row's latency is the sum of its entries
    table = json.loads((straight / "latency.json").read_text())
    assert table["batches"] == [1, 64] and len(table["checks"]) == 10 and table["device"]
    for r in found[:5]:
        assert r["latency_ms_b1"] == pytest.approx(table["fixed_ms"]["1"] + sum(
            table["blocks_ms"]["1"][i][c] for i, c in enumerate(r["choices"])), abs=1e-3)
    assert "latency table on" in (straight / "report" / "search.md").read_text()
    # two actors in two processes, each scoring its share (that they run at once: the rendezvous test below)
    first, second = state["timing"][0]["actors"]
    assert first["pid"] != second["pid"] and all(a["end"] >= a["start"] for a in (first, second))

    # the same search, killed (SIGKILL) once a generation is saved, then resumed: the same candidates and scores
    env = {**os.environ, **RAY_TEST_ENV, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "bigbatch.cluster.cli", "search", str(RECIPE), "--out", str(killed),
               *sets([*SMALL, "search.generations=3", f"search.supernet_run={straight / 'supernet'}"])]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saved = killed / "search_state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if saved.is_file() and json.loads(saved.read_text())["generation"] >= 1:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(saved.read_text())["generation"] < 3, "the search ended before it could be killed"
    code, out, err = cli("search", str(RECIPE), "--out", str(killed), "--resume", "auto",
                         *sets([*SMALL, "search.generations=3", f"search.supernet_run={straight / 'supernet'}"]))
    assert code == 0, err
    key = [(r["generation"], r["method"], r["choices"], r["score"]) for r in rows(straight)]
    assert [(r["generation"], r["method"], r["choices"], r["score"]) for r in rows(killed)] == key

    # the ranking check: the best of the evolution and a random one, each trained alone and scored on the
    # held-out examples; tau counted here pair by pair from its definition (no ties in these scores)
    verified = json.loads((straight / "verify.json").read_text())
    evolution = sorted((r["score"], r["choices"]) for r in found if r["method"] == "evolution")
    assert verified["candidates"][0]["choices"] == evolution[-1][1]
    assert [d["method"] for d in verified["candidates"]] == ["evolution", "random"]
    for d in verified["candidates"]:
        alone = yaml.safe_load((straight / f"{d['run']}" / "recipe.yaml").read_text())
        assert alone["model"]["kwargs"]["choices"] == d["choices"] and alone["data"]["holdout"] == 300
        assert 0.0 <= d["standalone"] <= 1.0
    pairs = [(a, b) for i, a in enumerate(verified["candidates"]) for b in verified["candidates"][i + 1:]]
    signs = [(a["supernet"] - b["supernet"]) * (a["standalone"] - b["standalone"]) for a, b in pairs]
    if all(signs):
        assert verified["kendall_tau"] == pytest.approx((sum(x > 0 for x in signs) - sum(x < 0 for x in signs)) /
                                                        len(pairs))
    assert "Kendall's tau" in (straight / "report" / "search.md").read_text() and "ranking check" in said

    # best.yaml: the best evolution candidate as a catalogue `spos` network, trained from scratch
    best = max((r for r in found if r["method"] == "evolution"), key=lambda r: r["score"])
    text = (straight / "best.yaml").read_text()
    assert "name: spos\n" in text and "holdout: 0" in text and "epochs: 4" in text  # search.retrain applied
    assert (straight / "report" / "search.md").is_file() and (straight / "report" / "search.png").is_file()
    code, out, err = cli("train", str(straight / "best.yaml"), "--out", str(tmp_path / "retrained"),
                         "--set", "train.epochs=1")
    assert code == 0, err
    trained = yaml.safe_load((tmp_path / "retrained" / "recipe.yaml").read_text())
    assert trained["model"]["name"] == "spos" and trained["model"]["kwargs"]["choices"] == best["choices"]


@pytest.mark.timeout(180)
def test_the_shares_of_a_generation_are_scored_at_the_same_time_and_come_back_in_order(ray_cluster, tmp_path):
    from bigbatch.cluster.search import score_in_parallel

    class Rendezvous:  # defined here so that Ray ships it by value
        """A scorer that cannot finish until every other one has started: it passes only if shares run at once."""

        def __init__(self, directory: str, peers: int):
            self.directory, self.peers = directory, peers

        def score(self, candidates: list[list[int]]) -> dict:
            from pathlib import Path

            started = time.time()
            Path(self.directory, str(os.getpid())).touch()
            deadline = time.monotonic() + 60
            while len(list(Path(self.directory).iterdir())) < self.peers:
                assert time.monotonic() < deadline, "the other shares were not sent while this one was scoring"
                time.sleep(0.05)
            return {"scores": [float(sum(c)) for c in candidates], "pid": os.getpid(), "start": started,
                    "end": time.time()}

    actors = [ray_cluster.remote(num_cpus=0)(Rendezvous).remote(str(tmp_path), 2) for _ in range(2)]
    try:
        candidates = [[i, 1] for i in range(5)]
        scores, timing = score_in_parallel(actors, candidates)
        assert scores == [i + 1.0 for i in range(5)]  # dealt round-robin, put back in the candidates' order
        assert len({t["pid"] for t in timing}) == 2
    finally:
        for actor in actors:
            ray_cluster.kill(actor)


def test_a_search_needs_a_supernet_and_a_holdout(cli, tmp_path):
    code, _, err = cli("search", str(RECIPE), "--set", "data.holdout=0", "--out", str(tmp_path / "s"))
    assert code == 2 and "data.holdout: candidates are scored on training examples set apart" in err
    code, _, err = cli("search", str(REPO / "recipes" / "quickstart.yaml"), "--out", str(tmp_path / "q"))
    assert code == 2 and "model.name: bigbatch search trains and searches a supernet" in err
