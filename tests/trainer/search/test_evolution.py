"""The evolution's operators against their definitions (Guo et al. 2019, section 3.4 and the authors' code)."""

import json

import numpy as np
import torch

from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.complexity import count_macs
from bigbatch.trainer.search import evolution
from bigbatch.trainer.search.evolution import Sizes, Space

FREE = Space(positions=20, choices=4, allowed=lambda c: True)


def test_a_mutation_redraws_each_gene_with_the_given_probability():
    rng = np.random.default_rng(0)
    parents = [tuple(rng.integers(4, size=20).tolist()) for _ in range(3)]
    children = evolution.mutations(rng, FREE, parents, 400, 0.1, set(parents))
    assert len(children) == len(set(children)) == 400 and not set(children) & set(parents)
    # a child comes from one parent: it differs from it where a gene was redrawn to another value,
    # P = 0.1 x 3/4 per gene (a redraw can give the same value); children equal to a parent are discarded
    distances = [min(sum(a != b for a, b in zip(child, parent, strict=True)) for parent in parents)
                 for child in children]
    assert min(distances) >= 1
    assert 0.06 <= np.mean(distances) / 20 <= 0.12


def test_a_crossover_takes_every_gene_from_one_of_two_parents():
    rng = np.random.default_rng(1)
    parents = [tuple(rng.integers(4, size=20).tolist()) for _ in range(4)]
    children = evolution.crossovers(rng, FREE, parents, 50, set(parents))
    assert len(children) == 50
    for child in children:
        assert any(all(c in (p[i], q[i]) for i, c in enumerate(child)) for p in parents for q in parents)


def test_every_candidate_of_a_generation_is_new_valid_and_under_the_cap_by_an_independent_count():
    net = create_model("spos_supernet", num_classes=10, image_size=32)
    cap = 26e6  # about the middle of this space's 22-32.5M at 32 px
    space = Space(20, 4, lambda c: net.path_macs(list(c), 32) <= cap)
    rng = np.random.default_rng(2)
    first = evolution.random_candidates(rng, space, 12, set())
    scored = [(c, float(i)) for i, c in enumerate(first)]
    seen = set(first)
    second = evolution.next_generation(rng, space, Sizes(population=12, parents=4, mutations=5, crossovers=5),
                                       scored, seen)
    assert len(second) == 12 and len(set(second) | set(first)) == 24
    for candidate in second[:3] + first[:3]:
        assert all(0 <= g < 4 for g in candidate)
        with torch.device("meta"):
            built = create_model("spos", num_classes=10, image_size=32, choices=list(candidate))
        assert count_macs(built, 3, 32) <= cap


def test_parents_are_the_top_scored_of_all_generations():
    scored = [((0,), 0.5), ((1,), 0.9), ((2,), 0.7), ((3,), 0.9)]
    assert evolution.top(scored, 3) == [(1,), (3,), (2,)]  # ties: scored first first


def test_a_restored_generator_continues_the_same_draws():
    rng = np.random.default_rng([5, 1])
    rng.integers(4, size=7)
    state = evolution.generator_state(rng)
    again = evolution.restore_generator(json.loads(json.dumps(state)))
    assert np.array_equal(rng.integers(4, size=30), again.integers(4, size=30))


def test_a_space_run_dry_gives_a_smaller_generation_instead_of_looping():
    tiny = Space(positions=2, choices=2, allowed=lambda c: True)  # 4 candidates in all
    rng = np.random.default_rng(0)
    got = evolution.random_candidates(rng, tiny, 10, set())
    assert sorted(got) == [(0, 0), (0, 1), (1, 0), (1, 1)]
