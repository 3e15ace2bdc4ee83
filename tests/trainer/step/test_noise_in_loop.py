"""The loop feeds the gradient noise scale the right two norms, on every way a step can be split.

lr = 0 keeps the weights where they started, so the test can rebuild each logged step from its definition: rank
r's first micro-batch (the small batch b) and the whole step (the big batch B = W x micro-batch x accumulation)
are known from the seeded order; their mean cross-entropy gradients, computed here one example set at a time,
give |g_b|^2 (averaged over ranks) and |g_B|^2, and McCandlish et al.'s Appendix A.1 turns them into |G|^2 and
tr(Sigma). With noise_scale_decay 0 each step record holds exactly that step's estimates. Cases: one process
accumulating (micro-step 0 read from .grad), two gloo ranks without accumulation (the local gradient read by
DDP's comm hook before its all-reduce), two gloo ranks accumulating (micro-step 0 under no_sync).

A statistical check follows: at fixed weights the moving averages converge on the true B_simple of the
per-example gradients (the sampling here is without replacement within an epoch, so the expectation the test
compares with carries the finite-population factors).
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
from bigbatch.trainer.data import TrainOrder
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo

RECIPE = """
seed: 3
model: {name: mlp, kwargs: {hidden: 16}}
data: {name: digits, batch_size: 8}
train: {epochs: 1, log_every_steps: 1, eval_every_epochs: 0, progress_bar: false, keep_checkpoints: 1}
optim: {name: sgd, base_lr: 0.0, momentum: 0.0, weight_decay: 0.0, schedule: constant}
cluster: {workers: 1, backend: local}
track: {wandb: disabled, tensorboard: false, noise_scale_decay: 0.0}
"""
STEPS = 3


def mean_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).double()


def examples(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    train = trainer.parts.data.train
    return (torch.stack([train[i][0] for i in range(len(train))]).float(),
            torch.tensor([int(train[i][1]) for i in range(len(train))]))


def expected_records(trainer: Trainer, world: int, accum: int) -> list[tuple[float, float]]:
    """(|G|^2, tr(Sigma)) of each of the first STEPS steps, from Appendix A.1 on norms computed here."""
    x, y = examples(trainer)
    b = trainer.plan.per_worker_batch
    per_rank = [list(TrainOrder(seed=trainer.recipe.seed, num_examples=len(x), batch_size=b, world_size=world,
                                rank=r, accumulation_steps=accum).micro_batches(0)) for r in range(world)]
    out = []
    for step in range(STEPS):
        micro = [per_rank[r][step * accum: (step + 1) * accum] for r in range(world)]
        small = sum(float(mean_gradient(trainer.model, x[m[0]], y[m[0]]).square().sum()) for m in micro) / world
        every = torch.cat([idx for m in micro for idx in m])
        big_batch = len(every)
        big = float(mean_gradient(trainer.model, x[every], y[every]).square().sum())
        grad_sq = (big_batch * big - b * small) / (big_batch - b)
        trace = (small - big) / (1 / b - 1 / big_batch)
        out.append((grad_sq, trace))
    return out


def measured(run_dir: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and "event" not in r][:STEPS]
    return [(r["grad_sq_norm_est"], r["grad_var_est"]) for r in steps]


def check(trainer: Trainer, run_dir: Path, world: int, accum: int) -> None:
    got, want = measured(run_dir), expected_records(trainer, world, accum)
    assert len(got) == STEPS
    for (g_sq, trace), (want_sq, want_trace) in zip(got, want, strict=True):
        assert g_sq == pytest.approx(want_sq, rel=1e-4)
        assert trace == pytest.approx(want_trace, rel=1e-4)


def test_one_process_accumulating_measures_micro_step_zero(write, tmp_path):
    recipe = load_recipe(write("n.yaml", RECIPE), ["train.accumulation_steps=4", f"train.max_steps={STEPS}"])
    trainer = Trainer(recipe, tmp_path, LocalCollective())
    trainer.fit()
    check(trainer, tmp_path, 1, 4)


def _ranks(rank: int, world: int, path: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    for accum in (1, 2):  # DDP's comm hook; micro-step 0 under no_sync
        recipe = load_recipe(Path(path), [f"cluster.workers={world}", "cluster.backend=torch",
                                          f"train.accumulation_steps={accum}", f"train.max_steps={STEPS}"])
        trainer = Trainer(recipe, Path(run_dir) / str(accum), TorchDistributedCollective())
        trainer.fit()
        if rank == 0:
            check(trainer, Path(run_dir) / str(accum), world, accum)


def test_two_gloo_ranks_measure_each_rank_s_own_gradient_with_and_without_accumulation(write, tmp_path):
    spawn_gloo(_ranks, 2, str(write("n.yaml", RECIPE)), str(tmp_path))


def expected_uneven(trainer: Trainer, world: int) -> list[tuple[float, float]]:
    """As expected_records, for ranks sharing G unevenly: rank r's first micro-batch has n_r examples, so the
    mean over ranks of |g_r|^2 estimates |G|^2 + tr(Sigma) x mean(1 / n_r): Appendix A.1 with the harmonic
    mean of the n_r as the small batch. The micro-batches are the seeded order's, rank by rank."""
    x, y = examples(trainer)
    big_batch, accum = trainer.plan.global_batch, trainer.plan.epoch_accumulation[0]
    per_rank = [list(TrainOrder(seed=trainer.recipe.seed, num_examples=len(x), batch_size=0, world_size=world,
                                rank=r, accumulation_steps=accum, uneven_batch=big_batch).micro_batches(0))
                for r in range(world)]
    out = []
    for step in range(STEPS):
        micro = [per_rank[r][step * accum: (step + 1) * accum] for r in range(world)]
        firsts = [len(m[0]) for m in micro]
        assert len(set(firsts)) > 1  # the case: unequal first micro-batches
        small = sum(float(mean_gradient(trainer.model, x[m[0]], y[m[0]]).square().sum()) for m in micro) / world
        b = world / sum(1 / n for n in firsts)
        every = torch.cat([idx for m in micro for idx in m])
        assert len(every) == big_batch
        big = float(mean_gradient(trainer.model, x[every], y[every]).square().sum())
        out.append(((big_batch * big - b * small) / (big_batch - b), (small - big) / (1 / b - 1 / big_batch)))
    return out


def _uneven_ranks(rank: int, world: int, path: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    # G = 4 x 8 = 32 on 3 ranks: shares 11, 11, 10 in 2 micro-steps of at most 8 (6 + 5, 5 + 6, 5 + 5)
    recipe = load_recipe(Path(path), ["cluster.workers=4", "cluster.min_workers=2", "cluster.backend=torch",
                                      f"train.max_steps={STEPS}"])
    trainer = Trainer(recipe, Path(run_dir), TorchDistributedCollective())
    trainer.fit()
    if rank == 0:
        got, want = measured(Path(run_dir)), expected_uneven(trainer, world)
        assert len(got) == STEPS
        for (g_sq, trace), (want_sq, want_trace) in zip(got, want, strict=True):
            assert g_sq == pytest.approx(want_sq, rel=1e-4)
            assert trace == pytest.approx(want_trace, rel=1e-4)


def test_three_gloo_ranks_sharing_the_batch_unevenly_measure_with_the_harmonic_mean_of_their_micro_batches(
        write, tmp_path):
    spawn_gloo(_uneven_ranks, 3, str(write("n.yaml", RECIPE)), str(tmp_path))


def test_one_process_without_accumulation_has_nothing_to_measure(write, tmp_path):
    recipe = load_recipe(write("n.yaml", RECIPE), [f"train.max_steps={STEPS}"])
    Trainer(recipe, tmp_path, LocalCollective()).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("grad_var_est" in r or "gradient_noise_scale" in r for r in records)
    assert "gradient_noise_scale" not in json.loads((tmp_path / "summary.json").read_text())


def test_at_fixed_weights_the_averages_converge_on_the_per_example_b_simple(write, tmp_path):
    """30 epochs of 8 x 8 at fixed weights (moved off the start by full-batch descent first: at the start the mean
    gradient dwarfs the noise). Truth from every example's gradient: G their mean, tr(Sigma) their variance. The
    order draws without replacement from N examples, so E|g_b|^2 = |G|^2 + tr(Sigma)/b (N-b)/(N-1) and the
    estimator's limit is tr(Sigma) N/(N-1) / (|G|^2 - tr(Sigma)/(N-1)). One micro-batch per step and ~400
    effective samples leave the estimate within 15 % of it; the estimator's own 10 % convergence is
    tests/trainer/step/test_noise_scale.py's (4,000 steps)."""
    torch.set_num_threads(1)
    recipe = load_recipe(write("n.yaml", RECIPE), ["train.accumulation_steps=8", "train.epochs=30",
                                                   "track.noise_scale_decay=0.995", "seed=0"])
    trainer = Trainer(recipe, tmp_path, LocalCollective())
    x, y = examples(trainer)
    descent = torch.optim.SGD(trainer.model.parameters(), lr=0.5)
    for _ in range(30):
        descent.zero_grad()
        F.cross_entropy(trainer.model(x), y).backward()
        descent.step()
    g = torch.stack([mean_gradient(trainer.model, x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    trainer.model.zero_grad(set_to_none=True)
    mean, n = g.mean(0), len(g)
    trace, grad_sq = float(((g - mean) ** 2).sum(1).mean()), float(mean @ mean)
    limit = trace * n / (n - 1) / (grad_sq - trace / (n - 1))
    assert 10 < trace / grad_sq < 1000  # a regime where the estimate says something
    summary = trainer.fit()
    assert summary["gradient_noise_scale"]["end"]["value"] == pytest.approx(limit, rel=0.15)


def test_a_resumed_run_continues_the_moving_averages_exactly(write, tmp_path):
    """6 steps straight against 3, a resume from the step-3 checkpoint, then 3: same estimates at every step
    after the resume (the averages live in the checkpoint, not only in rank 0's memory)."""
    path = write("n.yaml", RECIPE)
    base = ["train.accumulation_steps=4", "optim.base_lr=0.1", "track.noise_scale_decay=0.9",
            "train.checkpoint_every_steps=3", "train.keep_checkpoints=4"]
    Trainer(load_recipe(path, [*base, "train.max_steps=6"]), tmp_path / "straight", LocalCollective()).fit()
    Trainer(load_recipe(path, [*base, "train.max_steps=3"]), tmp_path / "split", LocalCollective()).fit()
    Trainer(load_recipe(path, [*base, "train.max_steps=6"]), tmp_path / "split", LocalCollective(),
            resume=str(tmp_path / "split" / "checkpoints" / "step_00000003.pt")).fit()

    def noise(run: str) -> list[float]:
        records = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["grad_sq_norm_est"], r["grad_var_est"]) for r in records if "loss" in r and "event" not in r]

    straight, split = noise("straight"), noise("split")
    assert len(straight) == len(split) == 6
    for (g_sq, trace), (want_sq, want_trace) in zip(split[3:], straight[3:], strict=True):
        assert (g_sq, trace) == pytest.approx((want_sq, want_trace), rel=1e-6)


def _trained(path: Path, run_dir: Path, collective, overrides: list[str]) -> dict[str, torch.Tensor]:
    trainer = Trainer(load_recipe(path, ["optim.base_lr=0.1", "optim.momentum=0.9", f"train.max_steps={STEPS}",
                                         *overrides]), run_dir, collective)
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _same_weights_with_and_without(rank: int, world: int, path: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    for accum in (1, 2):
        common = [f"cluster.workers={world}", "cluster.backend=torch", f"train.accumulation_steps={accum}"]
        on, off = (_trained(Path(path), Path(run_dir) / f"{accum}-{flag}", TorchDistributedCollective(),
                            [*common, f"track.noise_scale={flag}"]) for flag in ("true", "false"))
        assert all(torch.equal(on[k], off[k]) for k in off), f"accumulation {accum}: measuring moved the weights"


def test_measuring_never_changes_what_is_trained(write, tmp_path):
    """Bitwise the same weights with track.noise_scale on (a measurement every step) and off: one process
    accumulating, and two gloo ranks with (no_sync) and without accumulation (DDP's comm hook squares the
    local buckets, then must average them exactly as DDP's own all-reduce does)."""
    path = write("n.yaml", RECIPE)
    on, off = (_trained(path, tmp_path / flag, LocalCollective(), ["train.accumulation_steps=4",
                                                                   f"track.noise_scale={flag}"])
               for flag in ("true", "false"))
    assert all(torch.equal(on[k], off[k]) for k in off)
    spawn_gloo(_same_weights_with_and_without, 2, str(path), str(tmp_path / "gloo"))
