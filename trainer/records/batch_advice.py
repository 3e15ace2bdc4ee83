"""What a run's measured gradient noise scale says about its global batch, in words.

McCandlish et al. 2018 model the trade-off between steps and examples as S = S_min (1 + B_noise / B) and
E = E_min (1 + B / B_noise): well below B_noise a larger batch cuts the steps nearly in proportion; far above
it the steps hardly fall and the examples (compute) grow with the batch. B_simple (the step records'
`gradient_noise_scale`) estimates B_noise; it usually grows as the loss falls, so it is read at three points
of training. The run summary, `bigbatch report` and `bigbatch show --from RUN_DIR` all use this.

Each reading is the measured step (a step record with the estimates) nearest 10 %, 50 % and 100 % of the last
measured step, and carries that step's own B_simple, or none: a reading never borrows a value from another
step. B_simple = tr(Sigma) / |G|^2 is the ratio of the two moving averages, and it is only read when both are
positive. When one is not, the reading says so and gives no number:

- |G|^2 average <= 0: the mean gradient is below what this run's two batch sizes (a micro-batch against the
  global batch) resolve. Taken at face value the ratio has no finite value (B_simple unbounded above), and the
  averages give no lower bound either. Bounds that hold for the true quantities, B_simple >= tr(Sigma) /
  E|g_B|^2 for either batch size B, are below B by construction, while their plug-in values from averages with
  |G|^2 <= 0 are >= B: they carry no information. The estimate of |G|^2 is unbiased and positive in
  expectation, so a non-positive average is noise (or a bias of the measurement) that the averages cannot size
  without a variance, which they do not keep. So no bound is given, and no verdict on the global batch.
- tr(Sigma) average <= 0 (with |G|^2 > 0): the gradient noise is below what the two batch sizes resolve;
  B_simple reads as zero or less, which no batch can be near: no number and no verdict either.

The verdict and the model's steps and examples are given only when the end reading has a value; earlier
readings are reported, never substituted for it. The summary also counts the measured steps where B_simple
could be read, and names the last of them, so a run whose estimate went non-positive early says so.
"""

import math

# A batch within this factor of B_simple is "near" it (at B = B_noise the run takes 2x the fewest steps and 2x
# the fewest examples; a factor 2 either way keeps both within 3x).
NEAR = 2.0
# Where the three readings are taken, as fractions of the last measured step ("start" is not the very first
# reading: one estimate is noise, and the moving averages need some updates to settle).
POINTS = {"start": 0.1, "middle": 0.5, "end": 1.0}
NOT_RESOLVED = "not resolved"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _measured(record: dict) -> bool:
    return "event" not in record and (_number(record.get("grad_sq_norm_est"))
                                      or _number(record.get("gradient_noise_scale")))


def _value(record: dict) -> float | None:
    """The record's B_simple when both averages are positive (older records carry only the ratio)."""
    value = record.get("gradient_noise_scale")
    return float(value) if _number(value) and math.isfinite(value) and value > 0 else None


def _reading(record: dict) -> dict:
    reading = {"step": record["step"], "value": _value(record)}
    for key in ("grad_sq_norm_est", "grad_var_est"):
        if _number(record.get(key)):
            reading[key] = record[key]
    return reading


def noise_scale_readings(history: list[dict]) -> dict | None:
    """The measured step nearest 10 %, 50 % and 100 % of the measured steps, each as {step, value (B_simple, or
    None where it cannot be read), grad_sq_norm_est, grad_var_est (when recorded)}; None when the run measured
    nothing (one micro-batch per step, or track.noise_scale off)."""
    points = {}
    for r in history:
        if _measured(r):
            points[r["step"]] = r  # a step logged twice (a resumed attempt): the later record
    if not points:
        return None
    steps = sorted(points)
    last = steps[-1]
    return {name: _reading(points[min(steps, key=lambda s: abs(s - at * last))]) for name, at in POINTS.items()}


def resolved_steps(history: list[dict]) -> tuple[int, list[int]]:
    """(measured steps, the steps among them where B_simple could be read)."""
    points = {r["step"]: _value(r) for r in history if _measured(r)}
    return len(points), sorted(s for s, v in points.items() if v is not None)


def verdict(global_batch: int, b_simple: float | None) -> str:
    """'below', 'near' or 'far above' B_simple; 'not resolved' when it could not be read."""
    if b_simple is None:
        return NOT_RESOLVED
    ratio = global_batch / b_simple
    return "below" if ratio < 1 / NEAR else "near" if ratio <= NEAR else "far above"


def _why(reading: dict) -> str:
    """Why a reading has no value, in words."""
    grad_sq, trace = reading.get("grad_sq_norm_est"), reading.get("grad_var_est")
    if not (_number(grad_sq) and _number(trace) and math.isfinite(grad_sq) and math.isfinite(trace)):
        return "the averages are not finite numbers"
    if grad_sq <= 0:
        return (f"the |G|^2 average is not positive ({grad_sq:.3g}, tr(Sigma) {trace:.3g}): the mean "
                f"gradient is below what this run's batches resolve, so B_simple is unbounded above and the "
                f"averages give no lower bound")
    return (f"the tr(Sigma) average is not positive ({trace:.3g}, |G|^2 {grad_sq:.3g}): the gradient "
            f"noise is below what this run's batches resolve, so B_simple cannot be read")


def advice(global_batch: int, readings: dict, history: list[dict] | None = None) -> str:
    """One paragraph: the readings with their own steps, where the global batch stands against the end value
    and what the model predicts for it, or, when the end could not be read, why not and no verdict. With the
    history, how many measured steps could be read."""
    def seen(name: str, r: dict) -> str:
        return f"{name} {r['value']:.0f} (step {r['step']})" if r["value"] is not None else \
            f"{name} {NOT_RESOLVED} (step {r['step']})"

    text = f"gradient noise scale B_simple: {', '.join(seen(name, r) for name, r in readings.items())}."
    end = readings["end"]
    if end["value"] is not None:
        word, b = verdict(global_batch, end["value"]), end["value"]
        then = {"below": "a larger batch would still cut the steps nearly in proportion",
                "near": "this is the critical batch, where steps and compute trade evenly",
                "far above": "more workers mostly buy more compute; the steps hardly fall"}[word]
        text += (f" The global batch {global_batch} is {global_batch / b:.2g}x the end value: {word} it; {then} "
                 f"(McCandlish et al.: {1 + b / global_batch:.2f}x the fewest steps, {1 + global_batch / b:.2f}x "
                 f"the fewest examples).")
    else:
        text += f" At step {end['step']} {_why(end)}; no verdict on the global batch {global_batch}."
    if history is not None:
        measured, resolved = resolved_steps(history)
        if len(resolved) < measured:
            last = f", the last at step {resolved[-1]}" if resolved else ""
            text += f" B_simple could be read (both averages positive) at {len(resolved)} of {measured} " \
                    f"measured steps{last}."
    return text


def summary_entry(history: list[dict], global_batch: int) -> dict | None:
    """The run summary's `gradient_noise_scale`: readings, verdict and advice (None when nothing was measured)."""
    readings = noise_scale_readings(history)
    if readings is None:
        return None
    measured, resolved = resolved_steps(history)
    return {**readings, "global_batch": global_batch, "verdict": verdict(global_batch, readings["end"]["value"]),
            "measured_steps": measured, "resolved_steps": len(resolved),
            "last_resolved_step": resolved[-1] if resolved else None,
            "advice": advice(global_batch, readings, history)}
