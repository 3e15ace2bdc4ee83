"""What a run's measured gradient noise scale says about its global batch, in words.

McCandlish et al. 2018 model the trade-off between steps and examples as S = S_min (1 + B_noise / B) and
E = E_min (1 + B / B_noise): well below B_noise a larger batch cuts the steps nearly in proportion; far above
it the steps hardly fall and the examples (compute) grow with the batch. B_simple (the step records'
`gradient_noise_scale`) estimates B_noise; it usually grows as the loss falls, so it is read at three points
of training. The run summary, `bigbatch report` and `bigbatch show --from RUN_DIR` all use this.
"""

# A batch within this factor of B_simple is "near" it (at B = B_noise the run takes 2x the fewest steps and 2x
# the fewest examples; a factor 2 either way keeps both within 3x).
NEAR = 2.0
# Where the three readings are taken, as fractions of the last measured step ("start" is not the very first
# reading: one estimate is noise, and the moving averages need some updates to settle).
POINTS = {"start": 0.1, "middle": 0.5, "end": 1.0}


def noise_scale_readings(history: list[dict]) -> dict | None:
    """B_simple near 10 %, 50 % and 100 % of the measured steps ({name: {step, value}}), from step records;
    None when the run measured none (one micro-batch per step, or track.noise_scale off)."""
    points = [(r["step"], r["gradient_noise_scale"]) for r in history
              if "event" not in r and isinstance(r.get("gradient_noise_scale"), int | float)]
    if not points:
        return None
    last = points[-1][0]
    return {name: dict(zip(("step", "value"), min(points, key=lambda p: abs(p[0] - at * last)), strict=True))
            for name, at in POINTS.items()}


def verdict(global_batch: int, b_simple: float) -> str:
    """'below', 'near' or 'far above' B_simple."""
    ratio = global_batch / b_simple
    return "below" if ratio < 1 / NEAR else "near" if ratio <= NEAR else "far above"


def advice(global_batch: int, readings: dict) -> str:
    """One paragraph: the readings, where the global batch stands against the end-of-training value, and what
    the model predicts for it."""
    end = readings["end"]["value"]
    word = verdict(global_batch, end)
    seen = ", ".join(f"{name} {r['value']:.0f} (step {r['step']})" for name, r in readings.items())
    steps, examples = 1 + end / global_batch, 1 + global_batch / end
    then = {"below": "a larger batch would still cut the steps nearly in proportion",
            "near": "this is the critical batch, where steps and compute trade evenly",
            "far above": "more workers mostly buy more compute; the steps hardly fall"}[word]
    return (f"gradient noise scale B_simple: {seen}. The global batch {global_batch} is "
            f"{global_batch / end:.2g}x the end value: {word} it; {then} (McCandlish et al.: {steps:.2f}x the "
            f"fewest steps, {examples:.2f}x the fewest examples).")


def summary_entry(history: list[dict], global_batch: int) -> dict | None:
    """The run summary's `gradient_noise_scale`: readings, verdict and advice (None when nothing was measured)."""
    readings = noise_scale_readings(history)
    if readings is None:
        return None
    return {**readings, "global_batch": global_batch, "verdict": verdict(global_batch, readings["end"]["value"]),
            "advice": advice(global_batch, readings)}
