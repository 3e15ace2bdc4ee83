"""Where a global batch stands against the measured noise scale, and what McCandlish et al.'s model predicts for
it: steps S = S_min (1 + B_noise / B), examples E = E_min (1 + B / B_noise)."""

import re

import pytest

from bigbatch.trainer.records.batch_advice import advice, noise_scale_readings, summary_entry, verdict


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
