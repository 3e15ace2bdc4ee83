"""`--resume auto` on Ray: the checkpoint Ray registered last (by reference, when its storage is on the run
directory's file system) is a candidate like any other: a damaged one is skipped for the newest one that
verifies, a missing one is said, and neither starts the run over."""

import json

import pytest

from bigbatch.cluster.launch import launch
from bigbatch.trainer.recipe import load_recipe

RAY = ["cluster.backend=torch", "cluster.workers=1", "train.checkpoint_every_steps=2", "train.eval_every_epochs=0",
       "data.batch_size=16"]


def starts(run_dir) -> list[dict]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r for r in records if r.get("event") == "start"]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_resume_auto_on_ray_skips_a_damaged_or_missing_registered_checkpoint(ray_cluster, tiny, tmp_path, capfd):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    launch(load_recipe(tiny, [*RAY, "train.max_steps=4"]), run_dir)
    assert list((run_dir / "ray").rglob("checkpoint_ref.json")), "Ray's storage should reference the run's files"
    capfd.readouterr()

    # the registered step 4 truncated in place (best.pt, a hard link, would go with it): step 2 is used
    newest = checkpoints / "step_00000004.pt"
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    summary = launch(load_recipe(tiny, [*RAY, "train.max_steps=6"]), run_dir, resume="auto")
    err = capfd.readouterr().err
    assert summary["step"] == 6
    assert starts(run_dir)[-1]["resumed_from"].endswith("step_00000002.pt"), err
    assert "step_00000004.pt" in err and "truncated" in err and "the newest checkpoint that verifies" in err, err

    # the registered step 6 gone: said in one line, and the run goes on from step 4 (rewritten at step 4 above)
    (checkpoints / "step_00000006.pt").unlink()
    summary = launch(load_recipe(tiny, [*RAY, "train.max_steps=8"]), run_dir, resume="auto")
    err = capfd.readouterr().err
    assert summary["step"] == 8
    assert starts(run_dir)[-1]["resumed_from"].endswith("step_00000004.pt"), err
    assert any("step_00000006.pt" in line and "missing" in line for line in err.splitlines()), err


def test_which_checkpoint_resumes_after_ray_registered_one(tmp_path):
    from bigbatch.cluster.ray_launch import resume_after_ray
    from bigbatch.trainer.run.checkpoint import CheckpointDir

    own, elsewhere = CheckpointDir(tmp_path / "run" / "checkpoints"), CheckpointDir(tmp_path / "ray")
    named = str(tmp_path / "other" / "step_00000001.pt")
    assert resume_after_ray(None, named, own.directory) == (named, "")
    gone, why = resume_after_ray(own.path_for(2), named, own.directory)
    assert gone == named and "step_00000002.pt is missing; resuming from --resume" in why
    assert "step 0" in resume_after_ray(own.path_for(2), "auto", own.directory)[1]
    for step in (2, 4):
        own.save({"step": step}, step)
        elsewhere.save({"step": step + 2}, step + 2)
    assert resume_after_ray(own.path_for(4), named, own.directory) == ("auto", "")  # verified with the others
    assert resume_after_ray(elsewhere.path_for(6), "auto", own.directory) == (str(elsewhere.path_for(6)), "")
    assert resume_after_ray(elsewhere.path_for(4), "auto", own.directory) == ("auto", "")  # not newer
    chosen, why = resume_after_ray(own.path_for(6), "auto", own.directory)
    assert chosen == "auto" and "step_00000006.pt is missing" in why and "newest checkpoint that verifies" in why
