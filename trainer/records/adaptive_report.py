"""The adaptive batch in `bigbatch report` (train.batch_policy: adaptive, trainer/adaptive/pace.py): what the run
chose and why, read from metrics.jsonl alone.

An adaptive run's step records carry "adascale_gain" (and "global_batch", "progress"), and each decision is a
"batch_change" event with its one-line "why" and the predicted goodput of every candidate batch. The report
draws batch.png from the step records and writes an "Adaptive batch" section from the events, so a reader sees
when the batch moved, what the goodput model promised for the batch left and the batch chosen, and how many
steps the run took for the recipe's budget (its start event's total_steps, counted in steps of the recipe's
batch: the run ends when its progress reaches it). A fixed run has no gain in its records, and its report keeps
exactly its four plots and no such section. The figure helpers stay in report.py, which draws onto the axes
this module fills (`draw_batch`), so the modules import one way only.
"""

BATCH_PLOT = "batch.png"
BATCH_TITLE = "global batch and AdaScale gain against step"


def is_adaptive(steps: list[dict]) -> bool:
    """Whether the run chose its batch: some step record carries the AdaScale gain."""
    return any(_number(r.get("adascale_gain")) for r in steps)


def batch_changes(records: list[dict]) -> list[dict]:
    """Every "batch_change" event, in order. One after a resize may keep the batch ("from" == "to"): it is
    still a decision, with its why, so the table lists it; only real changes are marked on the plots."""
    return [r for r in records if r.get("event") == "batch_change" and _number(r.get("step"))]


def moves(records: list[dict]) -> list[dict]:
    """The changes that moved the batch: where the plots draw a line."""
    return [r for r in batch_changes(records) if r.get("from") != r.get("to")]


def step_at_progress(steps: list[dict], progress: float) -> int | None:
    """The first logged step whose progress (in steps of the recipe's batch) reached `progress`: where an
    adaptive run passed a point of the recipe's schedule, such as the end of warmup; None if not yet."""
    return next((r["step"] for r in steps if _number(r.get("progress")) and r["progress"] >= progress), None)


def draw_batch(ax, steps: list[dict]) -> list:
    """The global batch as a step line (a record's batch held since the previous log step: a change is made at a
    log step, so "steps-pre") and, on a twin y axis, the AdaScale gain; returns the twin axis. Both y axes are
    labelled, and the twin's lines join the legend that the caller draws on `ax`."""
    batch = [(r["step"], r["global_batch"]) for r in steps if _number(r.get("global_batch"))]
    gain = [(r["step"], r["adascale_gain"]) for r in steps if _number(r.get("adascale_gain"))]
    if batch:
        ax.plot(*zip(*batch, strict=True), drawstyle="steps-pre", color="tab:blue", label="global batch")
    twin = ax.twinx()
    twin.set_ylabel("AdaScale gain")
    if gain:
        twin.plot(*zip(*gain, strict=True), color="tab:orange", label="AdaScale gain")
    return twin


def legend(ax, twin) -> None:
    """One legend for both y axes (matplotlib gives each axis its own)."""
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, loc="best")


def adaptive_section(records: list[dict], steps: list[dict], steps_done: int) -> list[str]:
    """report.md's "Adaptive batch" section: the final batch and gain, the steps against the recipe's budget,
    and a table of the decisions with the goodput predicted for the batch left and the batch chosen."""
    last = [r for r in steps if _number(r.get("adascale_gain"))][-1]
    reference, budget = _recipe_budget(records)
    lines = ["", "## Adaptive batch", "",
             f"- final batch: {last.get('global_batch', 'n/a')}, AdaScale gain {last['adascale_gain']:.3f} "
             f"(step {last['step']}; the recipe's batch {reference})"]
    progress = f"progress {last['progress']:.1f}" if _number(last.get("progress")) else "progress n/a"
    ratio = f" ({steps_done / budget:.2f}x)" if budget else ""
    lines.append(f"- steps: {steps_done} taken for a budget of {budget or 'n/a'} steps at the recipe's batch "
                 f"{reference}{ratio}; {progress} in steps of {reference}")
    changes = batch_changes(records)
    if not changes:
        return [*lines, "- changes: none (the batch stayed the recipe's)"]
    lines += ["", "| step | progress | batch | why | predicted goodput, batch left | predicted goodput, "
                  "batch chosen |", "|---:|---:|---|---|---:|---:|"]
    for change in changes:
        predicted = change.get("predicted_goodput") or {}
        moved = (f"{change.get('from')} -> {change.get('to')}" if change.get("from") != change.get("to")
                 else f"{change.get('to')} (kept)")
        why = str(change.get("why", "")).replace("|", "\\|")
        lines.append(f"| {change['step']} | {_fmt(change.get('progress'))} | {moved} | {why} | "
                     f"{_fmt(predicted.get(str(change.get('from'))))} | "
                     f"{_fmt(predicted.get(str(change.get('to'))))} |")
    return [*lines, "", "Predicted goodput: progress per second in examples of the recipe's batch (its batch x the "
                        "AdaScale gain / step time, trainer/adaptive/goodput.py), when the decision was made."]


def _recipe_budget(records: list[dict]) -> tuple:
    """(the recipe's batch, its step budget or None). Every start carries the recipe's batch as "global_batch"
    (an adaptive plan keeps it: its schedule counts steps of it); the budget is "total_steps" of the start at
    step 0 only, as a resumed start carries the plan laid out for the changes so far, an upper bound."""
    starts = [r for r in records if r.get("event") == "start"]
    changes = batch_changes(records)
    reference = (starts[0].get("global_batch") if starts else None) or (changes[0].get("from") if changes else None)
    first = next((r for r in starts if not r.get("step")), {})
    budget = first.get("total_steps")
    return reference or "n/a", budget if _number(budget) and budget > 0 else None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value) -> str:
    return f"{value:.1f}" if _number(value) else "n/a"
