"""Where a global batch stands against the measured noise scale, and what McCandlish et al.'s model predicts for
it: steps S = S_min (1 + B_noise / B), examples E = E_min (1 + B / B_noise)."""

import json
import re
from pathlib import Path

import pytest
import torch

from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.records.batch_advice import advice, noise_scale_readings, summary_entry, verdict
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo


def history(values: dict[int, float]) -> list[dict]:
    return ([{"event": "start", "step": 0}]
            + [{"step": s, "loss": 1.0, "gradient_noise_scale": v} for s, v in values.items()]
            + [{"step": 100, "loss": 1.0}, {"step": 100, "top1": 0.5}, {"event": "finish", "step": 100}])


def test_readings_near_a_tenth_half_and_the_end_of_the_measured_steps():
    readings = noise_scale_readings(history({s: float(s) for s in range(10, 101, 10)}))
    assert {name: r["step"] for name, r in readings.items()} == {"start": 10, "middle": 50, "end": 100}
    assert readings["end"]["value"] == 100.0
    assert noise_scale_readings(history({})) is None


@pytest.mark.parametrize(("batch", "word"), [(100, "below"), (499, "below"), (500, "near"), (1000, "near"),
                                            (2000, "near"), (2001, "far above"), (64_000, "far above")])
def test_verdict_against_a_factor_two_either_side(batch, word):
    assert verdict(batch, 1000.0) == word


def test_advice_quotes_the_model_s_steps_and_examples():
    readings = noise_scale_readings(history({10: 200.0, 50: 300.0, 100: 400.0}))
    text = advice(1600, readings)  # B = 4 B_noise: 1 + 1/4 of the fewest steps, 1 + 4 of the fewest examples
    assert "1600 is 4x the end value: far above it" in text
    assert re.search(r"1\.25x the fewest steps, 5\.00x the fewest examples", text)
    assert "start 200 (step 10), middle 300 (step 50), end 400 (step 100)" in text
    entry = summary_entry(history({10: 200.0, 50: 300.0, 100: 400.0}), 100)
    assert entry["verdict"] == "below" and "1.25x the fewest examples" in entry["advice"]
    assert summary_entry(history({}), 100) is None



def estimates(values: dict[int, tuple[float, float]]) -> list[dict]:
    """Step records as MeasureNoiseScale writes them: both averages, and B_simple only when both are positive."""
    records = [{"step": s, "loss": 1.0, "grad_sq_norm_est": g, "grad_var_est": t}
               | ({"gradient_noise_scale": t / g} if g > 0 and t > 0 else {}) for s, (g, t) in values.items()]
    return [{"event": "start", "step": 0}, *records, {"event": "finish", "step": 100}]


def test_a_phase_whose_averages_are_not_positive_has_no_value_and_borrows_none():
    runs = estimates({10: (1.0, 200.0), 20: (0.5, 200.0), 50: (-0.1, 100.0), 100: (2.0, -1.0)})
    readings = noise_scale_readings(runs)
    assert readings["start"] == {"step": 10, "value": 200.0, "grad_sq_norm_est": 1.0, "grad_var_est": 200.0}
    assert (readings["middle"]["step"], readings["middle"]["value"]) == (50, None)
    assert (readings["end"]["step"], readings["end"]["value"]) == (100, None)
    entry = summary_entry(runs, 64)
    text = entry["advice"]
    assert entry["verdict"] == verdict(64, None) == "not resolved"
    assert "start 200 (step 10), middle not resolved (step 50), end not resolved (step 100)." in text
    assert "At step 100 the tr(Sigma) average is not positive (-1, |G|^2 2)" in text
    assert "400" not in text and "McCandlish et al.:" not in text  # step 20's B_simple, and no model figures
    assert "at 2 of 4 measured steps, the last at step 20." in text

    text = summary_entry(estimates({10: (-1.0, 50.0), 100: (-0.25, 30.0)}), 64)["advice"]
    assert "start not resolved (step 10), middle not resolved (step 10), end not resolved (step 100)." in text
    assert "At step 100 the |G|^2 average is not positive (-0.25, tr(Sigma) 30)" in text
    assert "B_simple is unbounded above and the averages give no lower bound" in text
    assert "at 0 of 2 measured steps." in text
    # every measured step resolved: no count; a step logged again by a resumed attempt counts once, the later
    entry = summary_entry(estimates({10: (1.0, 100.0), 100: (1.0, 300.0)}) + [
        {"step": 100, "loss": 1.0, "grad_sq_norm_est": 1.0, "grad_var_est": 400.0, "gradient_noise_scale": 400.0}],
        64)
    assert entry["end"]["value"] == 400.0 and "measured steps" not in entry["advice"]
    assert (entry["measured_steps"], entry["resolved_steps"], entry["last_resolved_step"]) == (2, 2, 100)

QUICKSTART = Path(__file__).resolve().parents[3] / "recipes" / "quickstart.yaml"
QUICKSTART_STEPS = 30  # the quickstart's own schedule, stopped at step 30: |G|^2 is positive at steps 5 and 10 only


def _quickstart(rank: int, world: int, run_dir: str) -> None:
    torch.set_num_threads(1)
    recipe = load_recipe(QUICKSTART, [f"train.max_steps={QUICKSTART_STEPS}", "train.progress_bar=false",
                                      "track.wandb=disabled", "track.tensorboard=false"])
    Trainer(recipe, Path(run_dir), TorchDistributedCollective()).fit()


@pytest.mark.slow
def test_the_quickstart_s_advice_reads_each_phase_at_its_own_step_and_says_when_it_is_not_resolved(tmp_path):
    """The quickstart (2 gloo ranks, sync BN, global batch 64): from step 15 on the |G|^2 average is negative,
    so B_simple cannot be read there. Each reading is the measured step nearest 10 %, 50 % and 100 % of the
    measured steps, with that step's own value or none; never a value from another phase, and no verdict
    when the end is not resolved."""
    spawn_gloo(_quickstart, 2, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    measured = {r["step"]: r for r in records if "event" not in r and "grad_sq_norm_est" in r}
    assert sorted(measured) == list(range(5, QUICKSTART_STEPS + 1, 5))
    positive = [s for s, r in measured.items() if r["grad_sq_norm_est"] > 0]
    assert positive == [5, 10] and "gradient_noise_scale" in measured[10]  # the run still shows the bug's phase
    entry = json.loads((tmp_path / "summary.json").read_text())["gradient_noise_scale"]
    assert {name: entry[name]["step"] for name in ("start", "middle", "end")} == {"start": 5, "middle": 15,
                                                                                 "end": 30}
    assert entry["start"]["value"] == pytest.approx(measured[5]["gradient_noise_scale"])
    assert entry["middle"]["value"] is None and entry["end"]["value"] is None
    assert entry["end"]["grad_sq_norm_est"] == pytest.approx(measured[30]["grad_sq_norm_est"])
    text = entry["advice"]
    assert entry["verdict"] == "not resolved" and "no verdict on the global batch 64" in text
    assert f"start {measured[5]['gradient_noise_scale']:.0f} (step 5)" in text
    assert "middle not resolved (step 15)" in text and "end not resolved (step 30)" in text
    assert f"{measured[10]['gradient_noise_scale']:.0f}" not in text  # step 10's B_simple is no phase's reading
    assert "McCandlish et al.:" not in text and "unbounded above" in text
    assert "could be read (both averages positive) at 2 of 6 measured steps, the last at step 10" in text
    assert (entry["measured_steps"], entry["resolved_steps"], entry["last_resolved_step"]) == (6, 2, 10)
