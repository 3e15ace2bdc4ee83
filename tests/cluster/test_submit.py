"""Submission end to end on a real 2-node Ray cluster started on this machine, with token auth on; an elastic
run on it loses a node, loses a worker to SIGTERM and grows when a node joins."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.run_files import descendants, kill_node, records, wait_for_step

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "recipes" / "smoke.yaml"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# An elastic run: 3 workers asked of 2 one-CPU nodes, so it starts on 2. G = 3 x 32 = 96: 2 epochs of digits are
# 28 steps. A model without BatchNorm, so that any split of a step's 96 examples gives the same update.
# cluster.restart_timeout_s=10 (default 60): with the fast timings below, Ray Train's controller can ask for the
# old group size again within the second its elastic policy caches Ray's view (GET_RESERVED_RESOURCES_INTERVAL_S),
# right after the node watch withdrew its first stale request (seen on the SIGTERM leave: the drained node is gone
# in well under a second); that request then waits this long before the controller asks again with what is left.
ELASTIC = ("--set", "model.name=mlp", "--set", "model.kwargs={}", "--set", "cluster.workers=3", "--set",
           "train.epochs=2", "--set", "train.max_steps=100", "--set", "bn.sync=none", "--set",
           "train.checkpoint_every_steps=6", "--set", "cluster.min_workers=1", "--set", "cluster.max_failures=2",
           "--set", "cluster.restart_timeout_s=10")

# Ray's timings for this test's cluster, set in the environment the nodes inherit (so the job drivers and Ray
# Train's controllers too). The control store marks a killed node dead after 4 failed health checks 0.5 s apart
# (~2 s; default 5 x 3 s = 15 s), and Ray Train's controller polls its workers every 0.2 s (default 2 s; a
# worker's ray.train.report waits for that poll, so every checkpoint, the end and a stop waited up to 2 s).
FAST_RAY = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
            "RAY_health_check_timeout_ms": "2000", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_submit_node_loss_resubmit_and_job_commands_on_a_local_two_node_cluster(cli, capsys, tmp_path, monkeypatch):
    """One cluster for every job (each cluster costs ~15 s): an elastic run that loses a node and finishes on the
    worker left (issue 18; restarted as soon as Ray marks the node dead: issue 30), its resubmission onto an added
    node, which shrinks when a worker leaves on SIGTERM and grows back when another node joins, and its stop, a
    failing job, and the jobs commands."""
    for key, value in FAST_RAY.items():
        monkeypatch.setenv(key, value)
    state = tmp_path / "cluster"
    code, out, err = cli("cluster", "up", "--local", "--nodes", "2", "--cpus-per-node", "1", "--state-dir", state)
    assert code == 0, err
    recorded = json.loads((state / "cluster.json").read_text())
    assert len(recorded["process_groups"]) == 2 and recorded["dashboard_url"].startswith("http://127.0.0.1:")
    assert oct((state / "auth_token").stat().st_mode & 0o777) == "0o600"
    run = Path(recorded["storage"]) / "smoke"
    try:
        code, out, err = cli("submit", SMOKE, "--state-dir", state, *ELASTIC)
        assert code == 0, err
        job_id = out.splitlines()[0]
        assert job_id.startswith("bigbatch-smoke-")
        wait_for_step(run, 8, timeout_s=180)
        ranks = [json.loads((run / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        assert len({r["node_id"] for r in ranks}) == 2  # one worker per node
        killed = kill_node(recorded["process_groups"][1], [r["pid"] for r in ranks])
        assert len(killed) == 1
        lost, head = (next(r["node_id"] for r in ranks if (r["pid"] in killed) == gone) for gone in (True, False))
        killed_at = time.time()
        code, out, err = cli("jobs", "logs", job_id, "--state-dir", state, "--follow")
        assert code == 0, (out + err)[-3000:]
        assert "finished" in out
        assert f"Ray marked node {lost[:8]} dead" in out  # the driver's NodeWatch (node_loss.py)

        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["step"] == 28 and summary["world_size"] == 1
        steps = [r for r in records(run) if "loss" in r]
        assert {r["global_batch"] for r in steps} == {96}
        before = [r for r in steps if r["time"] <= killed_at]
        after = [r for r in steps if r["time"] > killed_at]
        assert {(r["world_size"], r["accumulation_steps"]) for r in before} == {(2, 2)}  # 2 x 24 as 2 x 12 (<= 32)
        assert {(r["world_size"], r["accumulation_steps"]) for r in after} == {(1, 3)}  # 1 x 32 x 3 micro-steps
        assert [(r["from"], r["to"]) for r in summary["resizes"]] == [(2, 1)]
        final = run / "checkpoints" / "step_00000028.pt"
        assert torch.load(final, weights_only=True)["world_size"] == 1
        # reported to Ray's storage too: by reference, as the storage shares the run directory's file system
        references = [json.loads(p.read_text())["path"] for p in (run / "ray").rglob("checkpoint_ref.json")]
        assert str(final.resolve()) in references
        resumed = [r for r in records(run) if r.get("event") == "start"][-1]
        with capsys.disabled():
            print(f"\nnode loss: {after[0]['time'] - killed_at:.1f} s from the kill to the next step record "
                  f"(resumed at step {resumed['step']})")

        # a node joins, and the same name again continues the run from its newest checkpoint, on 2 workers.
        # SIGTERM to every process of its rank 1 (a spot node shutting down): that worker leaves, its node is
        # drained, and the group shrinks to 1 (issue 30, item 5). Another node joins: the group checkpoints
        # after its next step and grows back to 2, nothing redone (item 4). `jobs stop` then stops it: the driver
        # gets SIGTERM, the workers checkpoint, the job ends STOPPED
        assert cli("cluster", "add-node", "--state-dir", state)[0] == 0
        code, out, err = cli("submit", SMOKE, "--state-dir", state, *ELASTIC, "--set", "cluster.max_failures=4",
                             "--set", "train.epochs=100", "--set", "train.max_steps=5000")
        assert code == 0, err
        long_id = out.splitlines()[0]
        wait_for_step(run, 31, world_size=2)
        pair = [json.loads((run / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        leaving = next(r for r in pair if r["node_id"] != head)  # the added node's worker (the head is not drained)
        for pid in [leaving["pid"], *descendants(leaving["pid"])]:
            os.kill(pid, signal.SIGTERM)
        shrunk = wait_for_step(run, 32, timeout_s=120, world_size=1)
        assert cli("cluster", "add-node", "--state-dir", state)[0] == 0
        wait_for_step(run, shrunk["step"] + 1, timeout_s=120, world_size=2)
        code, out, _ = cli("jobs", "stop", long_id, "--state-dir", state)
        assert code == 0 and "stop requested" in out
        code, out, _ = cli("jobs", "logs", long_id, "--state-dir", state, "--follow")
        assert code == 143
        assert f"Ray marked node {leaving['node_id'][:8]} dead" in out  # drained, then out of the cluster
        events = [r for r in records(run) if r.get("event")]
        starts = [r for r in events if r["event"] == "start"]
        assert len(starts) == 5 and starts[2]["step"] == 28 and starts[2]["resumed_from"]
        since = events[events.index(starts[2]):]
        assert [(r["event"], r.get("world_size")) for r in since] == [
            ("start", 2), ("attempt_failed", None), ("start", 1), ("attempt_failed", None), ("start", 2),
            ("interrupted", None)]
        left, grown = since[1], since[3]
        assert f"signal {signal.SIGTERM} to a worker" in left["error"] and "the cluster grew" in grown["error"]
        assert since[2]["step"] == left["step"] and since[4]["step"] == grown["step"]  # resumed where they left
        trained = [r["step"] for r in records(run) if "loss" in r and r["time"] > starts[2]["time"]]
        assert trained == sorted(set(trained))  # no step trained twice
        stopped = json.loads((run / "summary.json").read_text())
        assert stopped["status"] == "interrupted" and stopped["step"] >= 31 and Path(stopped["checkpoint"]).is_file()
        assert [(c["from"], c["to"]) for c in stopped["resizes"]] == [(2, 1), (1, 2), (2, 1), (1, 2)]
        assert "the cluster grew" in stopped["resizes"][-1]["why"]

        # a run that fails on the cluster: exit 1, and `jobs status` shows why with the log's tail (trained by
        # the job's driver itself, cluster.backend local: the failure path is the job's, and it fails in seconds)
        code, out, err = cli("submit", SMOKE, "--state-dir", state, "--name", "bad",
                             "--set", "optim.base_lr=1e30", "--set", "optim.warmup_epochs=0", "--set",
                             "cluster.backend=local", "--set", "cluster.workers=1", "--set", "bn.sync=none",
                             "--follow")
        assert code == 1 and "FAILED" in err
        code, out, _ = cli("jobs", "status", out.splitlines()[0], "--state-dir", state)
        assert code == 0 and ": FAILED" in out.splitlines()[0] and "non-finite loss at step" in out

        code, out, _ = cli("jobs", "list", "--state-dir", state)
        assert code == 0 and job_id in out and out.count("SUCCEEDED") == 1 and "STOPPED" in out and "FAILED" in out
        code, out, _ = cli("jobs", "status", job_id, "--state-dir", state)
        assert code == 0 and out.startswith(f"{job_id}: SUCCEEDED")
        code, out, _ = cli("jobs", "logs", job_id, "--state-dir", state)
        assert code == 0 and "finished" in out
        code, _, err = cli("jobs", "status", "bigbatch-nope", "--state-dir", state)
        assert code == 2 and "bigbatch-nope: no such job" in err
        bad = tmp_path / "bad_token"
        bad.write_text("0" * 64)
        code, _, err = cli("jobs", "list", "--state-dir", state, "--token-file", bad)
        assert code == 2 and "refused the token" in err and err.count("\n") == 1
        code, _, err = cli("jobs", "list", "--address", recorded["dashboard_url"], "--state-dir", tmp_path / "none")
        assert code == 2 and "requires a token and none was given" in err
    finally:
        code, _, err = cli("cluster", "down", "--state-dir", state)
    assert code == 0, err
    assert not any(group_alive(pgid) for pgid in recorded["process_groups"])
    assert not (state / "cluster.json").exists()

    # the elastic run against the same run never interrupted: one process with G = 96 as 3 micro-steps of 32
    code, _, err = cli("train", SMOKE, "--out", tmp_path / "whole", *ELASTIC, "--set", "cluster.backend=local",
                       "--set", "cluster.workers=1", "--set", "train.accumulation_steps=3")
    assert code == 0, err
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert whole["global_batch"] == 96 and abs(summary["top1"] - whole["top1"]) <= 0.01


def test_a_recipe_error_never_reaches_the_cluster(cli, tmp_path):
    # the address is unreachable on purpose: the recipe must be rejected before anything is contacted
    code, _, err = cli("submit", SMOKE, "--address", "http://127.0.0.1:1",
                       "--set", "optim.base_lr=fast")
    assert code == 2 and "optim.base_lr" in err and "cannot reach" not in err


def test_an_unreachable_jobs_address_fails_fast(cli):
    code, _, err = cli("jobs", "list", "--address", "http://127.0.0.1:1")
    assert code == 2 and "--address: cannot reach 127.0.0.1:1" in err


def test_object_store_uris_are_refused_as_run_storage(cli, tmp_path):
    code, _, err = cli("submit", SMOKE, "--address", "http://127.0.0.1:1",
                       "--storage", "s3://bucket/runs")
    assert code == 2 and "--storage: expected a directory every node mounts" in err


def test_ports_for_a_local_cluster_are_distinct_and_outside_rays_worker_range():
    from bigbatch.cluster.local_cluster import RAY_WORKER_PORTS, free_ports

    ports = free_ports(40)
    assert len(set(ports)) == 40 and not any(p in RAY_WORKER_PORTS for p in ports)
