"""`bigbatch report` and `bigbatch runs` on the command line: what they print, exit codes, bad input."""

import json
import os
import time
from pathlib import Path

from PIL import Image


def fabricate(run_dir: Path, *events: dict, start_time: float = 1_700_000_000.0) -> Path:
    run_dir.mkdir(parents=True)
    records = [{"event": "start", "run_id": "r1", "step": 0, "resumed_from": None, "total_steps": 10},
               {"step": 2, "epoch": 0.5, "loss": 2.0, "lr": 0.1, "images_per_s": 80.0},
               {"step": 4, "epoch": 1.0, "loss": 1.5, "lr": 0.1, "images_per_s": 120.0},
               {"step": 4, "epoch": 1.0, "top1": 0.625, "top5": 0.875, "val_loss": 1.2}, *events]
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps({**r, "time": start_time + 2 * i}) + "\n"
                            for i, r in enumerate(records)))
    return path


def test_report_prints_report_md_then_the_plots(cli, tmp_path):
    fabricate(tmp_path / "r", {"event": "finish", "status": "finished", "step": 4})
    code, out, err = cli("report", tmp_path / "r")
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert paths[0] == tmp_path / "r" / "report" / "report.md"
    assert [p.name for p in paths[1:]] == ["lr.png", "loss.png", "top1.png", "images_per_s.png"]
    for p in paths[1:]:
        with Image.open(p) as image:
            assert image.size == (640, 400)
    md = paths[0].read_text()
    assert "- best top-1: 0.6250 at epoch 1 (step 4)" in md and "- steps: 4 / 10" in md
    assert "- median images/s: 100.0 (over 2 step records)" in md and "(8.0 s over 1 start(s))" in md


def test_report_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    code, out, err = cli("report", tmp_path / "missing")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "missing: run directory not found" in err
    path = fabricate(tmp_path / "bad")
    path.write_text(path.read_text().replace('"loss": 1.5', '"loss": 1.5,,'))
    code, _, err = cli("report", tmp_path / "bad")
    assert code == 2 and err.count("\n") == 1 and f"{path}, line 3: not a JSON record" in err
    assert cli("report")[0] == 2  # RUN_DIR is required


def test_runs_table_and_json(cli, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    fabricate(root / "done", {"event": "finish", "status": "finished", "step": 10})
    fabricate(root / "x" / "stopped", {"event": "interrupted", "status": "interrupted", "step": 5,
                                       "signal": 15, "checkpoint": "c.pt"}, start_time=1_700_000_100.0)
    lost = fabricate(root / "killed", start_time=1_700_000_200.0)
    an_hour_ago = time.time() - 3600
    os.utime(lost, (an_hour_ago, an_hour_ago))

    code, out, err = cli("runs", root)
    assert code == 0, err
    table = out.splitlines()
    assert table[0].split() == ["run", "status", "steps", "best", "top1", "duration", "started", "eta"]
    assert [line.split()[:5] for line in table[1:]] == [
        ["killed", "lost", "4/10", "0.6250", "0:00:06"],
        ["x/stopped", "interrupted", "5/10", "0.6250", "0:00:08"],
        ["done", "finished", "10/10", "0.6250", "0:00:08"]]

    code, out, _ = cli("runs", root, "--json", "--stale-after", "7200")
    rows = json.loads(out)
    assert {r["name"]: r["status"] for r in rows} == {"killed": "running", "x/stopped": "interrupted",
                                                     "done": "finished"}
    assert rows[0] == {"name": "killed", "path": str(root / "killed"), "run_id": "r1", "status": "running",
                       "steps_done": 4, "steps_total": 10, "best_top1": 0.625, "duration_s": 6.0,
                       "started": 1_700_000_200.0, "eta_s": 6.0}  # 6 steps left at 4 s per 4 steps

    monkeypatch.chdir(tmp_path)  # DIR defaults to ./runs
    code, out, _ = cli("runs")
    assert code == 0 and len(out.splitlines()) == 4


def test_runs_bad_input(cli, tmp_path):
    code, out, err = cli("runs", tmp_path / "nowhere")
    assert code == 2 and out == "" and "nowhere: directory not found" in err
    code, _, err = cli("runs", tmp_path, "--stale-after", "-1")
    assert code == 2 and "--stale-after: must be a number of seconds >= 0" in err
    assert cli("runs", tmp_path, "--stale-after", "soon")[0] == 2
    code, out, err = cli("runs", tmp_path)  # exists, holds no runs: not an error
    assert code == 0 and out == "" and "no run directories" in err
