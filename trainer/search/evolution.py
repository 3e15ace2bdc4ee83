"""Evolutionary architecture search as Guo et al. 2019 run it (section 3.4 and the authors' release,
megvii-model/SinglePathOneShot): a population of 50, 20 generations, the top 10 of everything scored so far
as parents, 25 mutations (each gene redrawn with probability 0.1), 25 crossovers (each gene from either of
two parents), and random candidates to fill the population. A candidate that breaks the constraints (the
multiply-add cap) or was scored before is discarded, and its draw counts against a bound of 10 draws per
wanted candidate (the authors' `max_iters`), so a generation can come out smaller when the space runs dry.

Pure functions of an explicit numpy generator: the search driver saves the generator's state with the
population, so a resumed search draws exactly what an uninterrupted one draws.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

Candidate = tuple[int, ...]
DRAWS_PER_CANDIDATE = 10


@dataclass(frozen=True)
class Space:
    """`positions` genes, each one of `choices` values; `allowed` says whether a candidate meets the caps."""
    positions: int
    choices: int
    allowed: Callable[[Candidate], bool]


@dataclass(frozen=True)
class Sizes:
    population: int = 50
    parents: int = 10
    mutations: int = 25
    mutation_prob: float = 0.1
    crossovers: int = 25


def _collect(draw: Callable[[], Candidate], space: Space, wanted: int, seen: set[Candidate]) -> list[Candidate]:
    """Up to `wanted` new allowed candidates from `draw`, within DRAWS_PER_CANDIDATE x wanted draws; each one
    taken is added to `seen`."""
    out: list[Candidate] = []
    for _ in range(DRAWS_PER_CANDIDATE * wanted):
        if len(out) == wanted:
            break
        candidate = draw()
        if candidate in seen or not space.allowed(candidate):
            continue
        seen.add(candidate)
        out.append(candidate)
    return out


def random_candidates(rng: np.random.Generator, space: Space, wanted: int, seen: set[Candidate]) -> list[Candidate]:
    """Uniform over the space, constrained by rejection (as the authors' get_random)."""
    return _collect(lambda: tuple(rng.integers(space.choices, size=space.positions).tolist()), space, wanted, seen)


def mutations(rng: np.random.Generator, space: Space, parents: list[Candidate], wanted: int, prob: float,
              seen: set[Candidate]) -> list[Candidate]:
    """A parent drawn uniformly; each of its genes redrawn uniformly with probability `prob`."""
    def draw() -> Candidate:
        parent = np.array(parents[rng.integers(len(parents))])
        redraw = rng.random(space.positions) < prob
        fresh = rng.integers(space.choices, size=space.positions)
        return tuple(np.where(redraw, fresh, parent).tolist())

    return _collect(draw, space, wanted, seen) if parents else []


def crossovers(rng: np.random.Generator, space: Space, parents: list[Candidate], wanted: int,
               seen: set[Candidate]) -> list[Candidate]:
    """Two parents drawn uniformly (possibly the same one: that child is a copy, discarded as seen); each gene
    from either with probability 1/2."""
    def draw() -> Candidate:
        first, second = (np.array(parents[i]) for i in rng.integers(len(parents), size=2))
        return tuple(np.where(rng.random(space.positions) < 0.5, first, second).tolist())

    return _collect(draw, space, wanted, seen) if parents else []


def top(scored: Iterable[tuple[Candidate, float]], k: int) -> list[Candidate]:
    """The k best candidates by score (ties: the one scored first)."""
    ranked = sorted(enumerate(scored), key=lambda item: (-item[1][1], item[0]))
    return [candidate for _, (candidate, _) in ranked[:k]]


def next_generation(rng: np.random.Generator, space: Space, sizes: Sizes, scored: list[tuple[Candidate, float]],
                    seen: set[Candidate]) -> list[Candidate]:
    """Mutations and crossovers of the top `parents` of all scored so far, then random candidates up to the
    population."""
    parents = top(scored, sizes.parents)
    out = mutations(rng, space, parents, sizes.mutations, sizes.mutation_prob, seen)
    out += crossovers(rng, space, parents, sizes.crossovers, seen)
    return out + random_candidates(rng, space, max(0, sizes.population - len(out)), seen)


def generator_state(rng: np.random.Generator) -> dict:
    """The generator's state as JSON-able data (numpy's PCG64 state holds plain integers)."""
    return rng.bit_generator.state


def restore_generator(state: dict) -> np.random.Generator:
    bits = np.random.PCG64()
    bits.state = state
    return np.random.Generator(bits)
