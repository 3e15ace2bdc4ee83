"""`bigbatch report` of an adaptive run (train.batch_policy: adaptive): batch.png, the "Adaptive batch" section,
and the run-summary readers treating "batch_change" lines as events. Records built by hand, from the shapes
trainer/adaptive/pace.py writes (step records with global_batch, adascale_gain, progress; batch_change events)."""

import json
from pathlib import Path

from PIL import Image

from bigbatch.trainer.records.adaptive_report import BATCH_PLOT, draw_batch, moves, step_at_progress
from bigbatch.trainer.records.batch_advice import summary_entry
from bigbatch.trainer.records.report import (
    PLOTS,
    _figure,
    _resume_lines,
    read_history,
    resizes,
    step_records,
    summarize,
    wall_time,
    warmup_end,
    write_report,
)
from bigbatch.trainer.records.runs import list_runs

T0 = 1_700_000_000.0
START = {"event": "start", "run_id": "ada", "step": 0, "resumed_from": None, "world_size": 1, "global_batch": 32,
         "total_steps": 120, "schedule_steps": 120, "warmup_steps": 10, "steps_per_epoch": 40}
# batch 32 (gain 1) to step 10, 64 (gain 1.5) to step 24, then 128 (gain 2) to step 40
SPANS = [(0, 10, 32, 1.0), (10, 24, 64, 1.5), (24, 40, 128, 2.0)]
CHANGES = [
    {"event": "batch_change", "step": 10, "from": 32, "to": 64, "progress": 10.0, "noise_scale_lower": 90.0,
     "why": "goodput 1.22x: 32 -> 64 (predicted 328 vs 268 examples/s)",
     "step_time_model": {"fixed_s": 0.1, "per_example_s": 0.0006, "source": "assumed"},
     "predicted_goodput": {"32": 268.46, "64": 328.48, "128": 325.6}},
    {"event": "batch_change", "step": 24, "from": 64, "to": 128, "progress": 31.0, "noise_scale_lower": 200.0,
     "why": "goodput 1.05x: 64 -> 128 (predicted 368 vs 349 examples/s)",
     "step_time_model": {"fixed_s": 0.1, "per_example_s": 0.0006, "source": "assumed"},
     "predicted_goodput": {"32": 268.46, "64": 349.44, "128": 367.52}},
]


def step(n: int, adaptive: bool) -> dict:
    """The step record at step n: the batch and gain of its span; progress = sum of the gains so far."""
    record = {"step": n, "epoch": n / 40, "loss": 2.0 / (1 + n), "lr": 0.1, "images_per_s": 1000.0 + n,
              "global_batch": 32}
    if adaptive:
        progress = sum(gain * (min(n, end) - begin) for begin, end, _, gain in SPANS if n > begin)
        batch, gain = next((b, g) for begin, end, b, g in SPANS if begin < n <= end)
        record.update(global_batch=batch, adascale_gain=gain, progress=progress)
    return record


def write_run(run_dir: Path, adaptive: bool) -> list[dict]:
    """A finished run of 40 steps logged every 2: with adaptive, the two changes after their steps' records."""
    records = [START]
    for n in range(2, 41, 2):
        records.append(step(n, adaptive))
        records += [c for c in CHANGES if adaptive and c["step"] == n]
    records.append({"event": "finish", "status": "finished", "step": 40})
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, record in enumerate(records):
            f.write(json.dumps({**record, "time": T0 + i}) + "\n")
    return records


def test_the_progress_of_the_fixture_is_the_sum_of_gains():
    assert [step(n, True)["progress"] for n in (10, 12, 24, 26, 40)] == [10.0, 13.0, 31.0, 35.0, 63.0]
    assert [c["progress"] for c in CHANGES] == [step(c["step"], True)["progress"] for c in CHANGES]


def test_report_of_an_adaptive_run_plots_the_batch_and_says_why_it_changed(tmp_path):
    write_run(tmp_path / "ada", adaptive=True)
    report = write_report(tmp_path / "ada")
    out = report.parent
    assert sorted(p.name for p in out.iterdir()) == sorted([*PLOTS, BATCH_PLOT, "report.md"])
    with Image.open(out / BATCH_PLOT) as image:
        assert image.format == "PNG" and image.size == (640, 400)
        low, high = image.convert("L").getextrema()
        assert low < 128 < high

    md = report.read_text()
    section = md.split("## Adaptive batch\n", 1)[1].split("\n## ", 1)[0]
    assert "- final batch: 128, AdaScale gain 2.000 (step 40; the recipe's batch 32)" in section
    # 40 steps for the recipe's 120 at batch 32; progress 63 = 10 x 1 + 14 x 1.5 + 16 x 2
    assert "- steps: 40 taken for a budget of 120 steps at the recipe's batch 32 (0.33x); progress 63.0 in " \
           "steps of 32" in section
    assert ("| 10 | 10.0 | 32 -> 64 | goodput 1.22x: 32 -> 64 (predicted 328 vs 268 examples/s) "
            "| 268.5 | 328.5 |") in section
    assert ("| 24 | 31.0 | 64 -> 128 | goodput 1.05x: 64 -> 128 (predicted 368 vs 349 examples/s) "
            "| 349.4 | 367.5 |") in section
    assert "- [batch.png](batch.png): global batch and AdaScale gain against step" in md
    assert "![global batch and AdaScale gain against step](batch.png)" in md
    assert md.index("## Adaptive batch") < md.index("## Recipe") < md.index("## Plots")


def test_report_of_a_fixed_run_has_no_batch_plot_and_no_adaptive_section(tmp_path):
    write_run(tmp_path / "fixed", adaptive=False)
    report = write_report(tmp_path / "fixed")
    assert sorted(p.name for p in report.parent.iterdir()) == sorted([*PLOTS, "report.md"])
    md = report.read_text()
    assert "Adaptive batch" not in md and "batch.png" not in md and "AdaScale" not in md


def test_batch_plot_draws_a_step_line_the_gain_on_a_twin_axis_and_a_line_per_change(tmp_path):
    records = write_run(tmp_path / "ada", adaptive=True)
    steps = step_records(records)
    _, ax = _figure("adaptive batch", "step", "global batch")
    twin = draw_batch(ax, steps)
    _resume_lines(ax, [], [], moves(records))
    batch, *marks = ax.get_lines()
    assert batch.get_drawstyle() == "steps-pre"  # a record's batch ran since the previous log step
    assert list(batch.get_ydata()) == [r["global_batch"] for r in steps]
    assert [m.get_xdata()[0] for m in marks] == [10, 24]
    assert ax.get_legend_handles_labels()[1] == ["global batch", "batch changed (2x)"]
    [gain] = twin.get_lines()
    assert list(gain.get_ydata()) == [r["adascale_gain"] for r in steps] and twin.get_ylabel() == "AdaScale gain"


def test_a_decision_that_kept_the_batch_is_listed_but_not_marked(tmp_path):
    records = write_run(tmp_path / "ada", adaptive=True)
    kept = {**CHANGES[1], "step": 30, "from": 128, "to": 128, "why": "after a resize (2 -> 1 workers): a | b"}
    assert moves([*records, kept]) == CHANGES
    with open(tmp_path / "ada" / "metrics.jsonl", "a") as f:
        f.write(json.dumps(kept) + "\n")
    md = write_report(tmp_path / "ada").read_text()
    assert "| 30 | 31.0 | 128 (kept) | after a resize (2 -> 1 workers): a \\| b | 367.5 | 367.5 |" in md


def test_warmup_of_an_adaptive_run_is_marked_where_its_progress_reached_it(tmp_path):
    records = write_run(tmp_path / "ada", adaptive=True)
    steps = step_records(records)
    assert warmup_end(records, {}) == 10  # in steps of the recipe's batch
    assert step_at_progress(steps, 10) == 10
    assert step_at_progress(steps, 12) == 12  # progress 13 at step 12
    assert step_at_progress(steps, 64) is None


def test_batch_change_lines_are_events_to_the_other_readers(tmp_path):
    """history.py, batch_advice.py and `bigbatch runs` read a batch_change line as an event, not a step."""
    records = write_run(tmp_path / "runs" / "ada", adaptive=True)
    history = read_history(tmp_path / "runs" / "ada" / "metrics.jsonl")
    assert [r["event"] for r in history if "event" in r] == ["start", "batch_change", "batch_change", "finish"]
    assert [r["step"] for r in step_records(history)] == list(range(2, 41, 2))
    assert resizes(history) == []
    assert wall_time(history) == len(records) - 1
    s = summarize(history, mtime=T0, now=T0 + 1e6)
    assert (s["status"], s["steps_done"], s["steps_total"], s["step_records"]) == ("finished", 40, 120, 20)
    with_noise = [{**r, "gradient_noise_scale": 100.0} if "loss" in r else r for r in history]
    assert summary_entry(with_noise, 128)["measured_steps"] == 20  # the events' noise_scale_lower is no reading
    assert summary_entry(history, 128) is None
    [row] = list_runs(tmp_path / "runs")
    assert (row["name"], row["status"], row["steps_done"]) == ("ada", "finished", 40)
