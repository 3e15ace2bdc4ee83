"""bench/largebatch.py's honesty rules: the lr is chosen on the held-out split only, and the table reports every
seed of the chosen cell and nothing else."""

from bench.largebatch import choose, chosen_runs, verdicts


def run(name: str, mult: float, seed: int, holdout: float, test: float, key: str = "b", batch: int = 8192) -> dict:
    return {"name": name, "key": key, "global_batch": batch, "lr_mult": mult, "seed": seed, "holdout": holdout,
            "test": test}


def test_choice_reads_the_holdout_never_the_test():
    results = [run("(b) 8192", 0.5, 0, holdout=0.80, test=0.99),  # the best test score must not matter
               run("(b) 8192", 1.0, 0, holdout=0.85, test=0.70),
               run("(b) 8192", 2.0, 0, holdout=0.84, test=0.90),
               run("(b) 8192", 2.0, 1, holdout=0.99, test=0.90)]  # a later seed decides nothing
    assert choose(results) == {"(b) 8192": 1.0}
    assert chosen_runs(results) == [results[1]]


def test_verdicts_count_a_gap_only_beyond_the_seed_range():
    base = [run("baseline", 1.0, s, 0.9, t, key="0", batch=256) for s, t in enumerate((0.90, 0.91, 0.92))]
    near = [run("(b) 8192", 1.0, s, 0.9, t) for s, t in enumerate((0.895, 0.905, 0.915))]  # 0.5 behind, range 2
    far = [run("(c) 8192", 1.0, s, 0.9, t, key="c") for s, t in enumerate((0.80, 0.81, 0.82))]  # 10 behind
    lines = verdicts(base + near + far)
    assert any(line.startswith("- (b) 8192: -0.50 points") and "within the seed spread" in line for line in lines)
    assert any(line.startswith("- (c) 8192: -10.00 points") and line.endswith("behind it.") for line in lines)
