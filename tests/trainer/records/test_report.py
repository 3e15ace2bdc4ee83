"""`bigbatch report` and `bigbatch runs` from the library side: plots, numbers, statuses, errors."""

import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest
from PIL import Image

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.records.report import PLOTS, read_history, summarize, warmup_end, write_report
from bigbatch.trainer.records.runs import find_run_dirs, format_runs, list_runs


@pytest.fixture
def one_thread():
    """--set train.threads=1 (much faster on a small, busy machine); torch's thread count restored after."""
    import torch

    before = torch.get_num_threads()
    yield ["--set", "train.threads=1"]
    torch.set_num_threads(before)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fabricate(run_dir: Path, *records: dict, start_time: float = 1_700_000_000.0) -> Path:
    """A run directory whose metrics.jsonl holds a start event (step 0, 20 steps planned) then `records`."""
    run_dir.mkdir(parents=True)
    start = {"event": "start", "run_id": run_dir.name, "step": 0, "resumed_from": None, "total_steps": 20,
             "global_batch": 64, "world_size": 2, "warmup_steps": 4, "time": start_time}
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, record in enumerate((start, *records)):
            f.write(json.dumps({"time": start_time + i, **record}) + "\n")
    return run_dir / "metrics.jsonl"


def step(n: int, loss: float = 1.0, rate: float = 100.0) -> dict:
    return {"step": n, "epoch": n / 10, "loss": loss, "lr": 0.1 * min(1, n / 4), "images_per_s": rate}


def check_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (640, 400), path  # the size docs/tracking.md documents (6.4 x 4 in at 100 dpi)
        low, high = image.convert("L").getextrema()
        assert low < 128 < high, f"{path} is blank"


def field(markdown: str, name: str) -> str:
    match = re.search(rf"^- {re.escape(name)}: (.*)$", markdown, re.M)
    assert match, f"no '{name}' line in report.md:\n{markdown}"
    return match.group(1)


def test_report_of_a_resumed_run(tiny, cli, tmp_path, one_thread):
    run = tmp_path / "run"
    # 6 steps and an evaluation, then resumed to 12 steps and another evaluation
    assert cli("train", tiny, "--out", run, "--set", "train.max_steps=6", *one_thread)[0] == 0
    time.sleep(0.2)  # a gap between the two segments that the wall time must leave out
    code, _, err = cli("train", tiny, "--out", run, "--set", "train.max_steps=12", "--resume", "auto",
                       *one_thread)
    assert code == 0, err

    report = write_report(run)
    assert report == run / "report" / "report.md"
    for name in PLOTS:
        check_png(run / "report" / name)
    assert sorted(p.name for p in report.parent.iterdir()) == sorted([*PLOTS, "report.md"])  # no tmp files

    # the numbers, computed here straight from metrics.jsonl
    records = lines(run / "metrics.jsonl")
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    assert len(starts) == 2 and records[starts[1]]["resumed_from"]
    evals = [r for r in records if "top1" in r and "event" not in r]
    assert [r["step"] for r in evals] == [6, 12]
    best = max(r["top1"] for r in evals)
    rates = [r["images_per_s"] for r in records if "loss" in r]
    duration = ((records[starts[1] - 1]["time"] - records[starts[0]]["time"])
                + (records[-1]["time"] - records[starts[1]]["time"]))
    assert duration < records[-1]["time"] - records[0]["time"] - 0.2

    md = report.read_text()
    assert field(md, "status") == "**finished**"
    assert field(md, "run id") == f"`{records[0]['run_id']}`"
    assert field(md, "steps") == f"{records[-1]['step']} / {records[starts[1]]['total_steps']}" == "12 / 12"
    assert field(md, "best top-1").startswith(f"{best:.4f} at epoch ")
    assert field(md, "final top-1 / top-5").startswith(f"{evals[-1]['top1']:.4f} / {evals[-1]['top5']:.4f}")
    assert field(md, "median images/s").startswith(f"{statistics.median(rates):.1f} (over {len(rates)} ")
    assert f"({duration:.1f} s over 2 start(s))" in field(md, "wall time")
    assert field(md, "model") == "resnet_small" and field(md, "data") == "digits"
    assert field(md, "global batch").startswith("32 ")
    assert field(md, "epochs") == "2" and field(md, "base lr").startswith("0.2 ")
    assert field(md, "warmup").startswith(f"{records[0]['warmup_steps']} steps")
    assert warmup_end(records, {}) == records[0]["warmup_steps"] == 22  # 0.5 of 44 steps per epoch
    for name in PLOTS:
        assert f"]({name})" in md

    [row] = list_runs(tmp_path)
    assert row["name"] == "run" and row["status"] == "finished"
    assert row["duration_s"] == pytest.approx(duration, abs=1e-6)
    assert (row["steps_done"], row["steps_total"], row["best_top1"]) == (12, 12, best)
    assert row["started"] == records[0]["time"]

    write_report(run)  # again: replaces the files
    check_png(run / "report" / "lr.png")


def test_report_before_any_evaluation_says_so(tmp_path):
    run = tmp_path / "early"
    fabricate(run, step(2, 2.3, 50.0), step(4, 2.1, 300.0), step(6, 1.9, 200.0))
    md = write_report(run).read_text()
    for name in PLOTS:
        check_png(run / "report" / name)  # top1.png says "no evaluation yet" instead of a curve
    assert field(md, "best top-1") == "n/a (no evaluation yet)"
    assert "(top1.png): top-1 and top-5 against epoch (no evaluation yet)" in md
    assert re.fullmatch(r"6 / 20 \(about \d+:\d\d:\d\d left at the current pace\)", field(md, "steps"))
    assert field(md, "median images/s").startswith("200.0 (over 3 ")
    assert field(md, "wall time").startswith("0:00:03 (3.0 s")
    assert field(md, "status") == "**running**"  # last event a start, metrics.jsonl just written
    assert field(md, "warmup").startswith("4 steps")


def test_report_of_an_interrupted_and_a_failed_run(tmp_path):
    fabricate(tmp_path / "i", step(2), {"event": "interrupted", "status": "interrupted", "step": 3,
                                        "signal": 15, "checkpoint": "ckpt/step_3.pt"})
    md = write_report(tmp_path / "i").read_text()
    assert field(md, "status") == "**interrupted** by signal 15 at step 3; checkpoint ckpt/step_3.pt"
    fabricate(tmp_path / "f", step(2), {"event": "failed", "status": "failed", "step": 3,
                                        "error": "non-finite loss at step 3 (epoch 0)"})
    md = write_report(tmp_path / "f").read_text()
    assert field(md, "status") == "**failed** at step 3: non-finite loss at step 3 (epoch 0)"


def test_list_runs_tells_every_status(tiny, cli, tmp_path, one_thread):
    root = tmp_path / "runs"
    assert cli("train", tiny, "--out", root / "done", "--set", "train.max_steps=4", *one_thread)[0] == 0
    fabricate(root / "stopped", step(2), step(4), {"event": "interrupted", "status": "interrupted", "step": 5,
                                                   "signal": 2, "checkpoint": "x.pt"}, start_time=1e9)
    fabricate(root / "group" / "broke", step(2), {"step": 2, "epoch": 0.2, "top1": 0.25, "top5": 0.5},
              {"step": 3, "epoch": 0.3, "top1": 0.5, "top5": 0.75},
              {"event": "failed", "status": "failed", "step": 3, "error": "boom"}, start_time=1e9 + 100)
    fabricate(root / "group" / "deep" / "live", step(2), start_time=1e9 + 200)
    lost = fabricate(root / "gone", step(2), step(4), start_time=1e9 + 300)
    an_hour_ago = time.time() - 3600
    os.utime(lost, (an_hour_ago, an_hour_ago))
    fabricate(root / "a" / "b" / "c" / "too_deep", start_time=1e9 + 400)  # depth 4: not looked at

    rows = list_runs(root)
    by_name = {r["name"]: r for r in rows}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "done": "finished", "stopped": "interrupted", "group/broke": "failed", "group/deep/live": "running",
        "gone": "lost"}
    # newest first
    assert [r["name"] for r in rows] == ["done", "gone", "group/deep/live", "group/broke", "stopped"]
    assert (by_name["stopped"]["steps_done"], by_name["stopped"]["steps_total"]) == (5, 20)
    assert by_name["stopped"]["duration_s"] == 3.0 and by_name["stopped"]["started"] == 1e9
    assert by_name["group/broke"]["best_top1"] == 0.5 and by_name["gone"]["best_top1"] is None
    assert by_name["done"]["steps_done"] == by_name["done"]["steps_total"] == 4
    assert by_name["done"]["best_top1"] == lines(root / "done" / "metrics.jsonl")[-1]["best_top1"]

    # the staleness threshold is a parameter: with 2 h, the hour-old run still counts as running
    assert {r["name"]: r["status"] for r in list_runs(root, stale_after_s=7200)}["gone"] == "running"
    assert {r["name"]: r["status"] for r in list_runs(root, stale_after_s=0.0)}["group/deep/live"] == "lost"

    # the root itself may be a run directory
    [row] = list_runs(root / "stopped")
    assert row["name"] == "." and row["status"] == "interrupted"
    assert find_run_dirs(root / "a") == [root / "a" / "b" / "c" / "too_deep"]


def test_format_runs_is_an_aligned_table_newest_first():
    rows = [{"name": "old", "status": "finished", "steps_done": 88, "steps_total": 88, "best_top1": 0.98331,
             "duration_s": 3723.4, "started": 1e9},
            {"name": "group/new", "status": "running", "steps_done": 4, "steps_total": None,
             "best_top1": None, "duration_s": 59.6, "started": 2e9, "eta_s": 125.2}]
    text = format_runs(rows).splitlines()
    assert text[0].split() == ["run", "status", "steps", "best", "top1", "duration", "started", "eta"]
    assert text[1].split()[:5] == ["group/new", "running", "4/?", "-", "0:01:00"]
    assert text[2].split()[:5] == ["old", "finished", "88/88", "0.9833", "1:02:03"]
    assert text[2].split()[5] == time.strftime("%Y-%m-%d", time.localtime(1e9))
    assert text[1].split()[-1] == "0:02:05" and text[2].split()[-1] == "-"  # ETA only for a running run
    assert len(text[1]) == len(text[2])  # aligned: every row's cells are padded to the column's width
    assert text[1].index("0:01:00") + len("0:01:00") == text[2].index("1:02:03") + len("1:02:03")


def test_statuses_follow_the_last_event():
    start = {"event": "start", "step": 0, "time": 10.0}
    finished = [start, {"event": "finish", "step": 8, "time": 20.0}]
    resumed = [*finished, {"event": "start", "step": 8, "time": 100.0},
               {"step": 10, "loss": 1.0, "time": 105.0}]
    assert summarize(finished, mtime=0.0, now=1e9)["status"] == "finished"
    assert summarize(resumed, mtime=1e9 - 10, now=1e9)["status"] == "running"
    assert summarize(resumed, mtime=1e9 - 601, now=1e9)["status"] == "lost"
    assert summarize(resumed, mtime=0.0, now=1e9)["duration_s"] == 10.0 + 5.0
    assert summarize([], mtime=0.0, now=1e9)["steps_done"] == 0


def test_missing_run_dir_and_missing_metrics(tmp_path):
    with pytest.raises(RecipeError, match=r"nowhere: run directory not found .*metrics\.jsonl"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match=r"empty: no metrics\.jsonl in it"):
        write_report(tmp_path / "empty")
    with pytest.raises(RecipeError, match=r"nowhere: directory not found"):
        list_runs(tmp_path / "nowhere")
    assert list_runs(tmp_path / "empty") == []


def test_malformed_line_is_named(tmp_path):
    path = fabricate(tmp_path / "bad", step(2), step(4))
    text = path.read_text().splitlines()
    text[1] = text[1][:-5]  # line 2 cut short
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(RecipeError, match=rf"{re.escape(str(path))}, line 2: not a JSON record"):
        write_report(tmp_path / "bad")
    with pytest.raises(RecipeError, match=r"metrics\.jsonl, line 2: "):
        list_runs(tmp_path)
    path.write_text('{"event": "start", "step": 0, "time": 1}\n[1, 2]\n')
    with pytest.raises(RecipeError, match=r"line 2: expected a JSON object, got list"):
        read_history(path)


def test_a_last_line_still_being_written_is_left_out(tmp_path):
    path = fabricate(tmp_path / "live", step(2))
    with open(path, "a") as f:
        f.write('{"step": 4, "epoch": 0.4, "lo')
    assert [r.get("step") for r in read_history(path)] == [0, 2]


def test_plots_mark_where_the_world_size_changed():
    from bigbatch.trainer.records.report import _figure, _resume_lines, resizes

    records = [{"event": "start", "step": 0, "world_size": 2}, {"event": "start", "step": 8, "world_size": 2},
               {"event": "start", "step": 12, "world_size": 1, "resumed_from": "c.pt"}]
    assert resizes(records) == [{"step": 12, "from": 2, "to": 1, "why": "resumed from c.pt with 1 workers"}]
    _, ax = _figure("t", "step", "lr")
    _resume_lines(ax, [8, 12], resizes(records))
    assert ax.get_legend_handles_labels()[1] == ["resumed", "workers 2 -> 1 (step 12)"]
    assert sorted(line.get_xdata()[0] for line in ax.get_lines()) == [8, 12]


def test_a_failed_attempt_ray_retries_reads_restarting_and_the_resize_says_why(tmp_path):
    from bigbatch.trainer.records.report import resizes
    from bigbatch.trainer.records.track import MetricsFile

    path = tmp_path / "metrics.jsonl"
    metrics = MetricsFile(path)
    for record in ({"event": "start", "step": 0, "world_size": 2}, {"step": 6, "loss": 1.0},
                   {"step": 8, "loss": 0.9}, {"event": "attempt_failed", "step": 8, "error": "peer closed"}):
        metrics.write(record)
    metrics.close()
    assert summarize(read_history(path), mtime=0.0, now=1e9)["status"] == "restarting"
    # the restarted group resumes at step 6: the step past it goes, the failed attempt's record stays
    metrics = MetricsFile(path, resume_step=6)
    metrics.write({"event": "start", "step": 6, "world_size": 1, "resumed_from": "c.pt"})
    metrics.close()
    history = read_history(path)
    assert [r.get("event") or r["step"] for r in history] == ["start", 6, "attempt_failed", "start"]
    assert resizes(history) == [{"step": 6, "from": 2, "to": 1,
                                 "why": "step 8: peer closed; resumed from c.pt with 1 workers"}]
    assert summarize(history, mtime=1e9, now=1e9)["status"] == "running"


def test_the_driver_turns_restarting_into_failed_when_ray_gives_up(tmp_path):
    from bigbatch.cluster.ray_launch import record_final_failure

    (tmp_path / "summary.json").write_text(json.dumps({"status": "restarting", "step": 8, "error": "peer closed"}))
    record_final_failure(tmp_path, RuntimeError("Ray Train run failed: 2 failures"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "Ray Train run failed: 2 failures"
    assert read_history(tmp_path / "metrics.jsonl")[-1]["event"] == "failed"
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished"}))
    record_final_failure(tmp_path, RuntimeError("late"))  # a run that ended otherwise is left as it is
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "finished"}
