"""Run directories from before stay resumable: a checkpoint written by the code before issue 28's split of the
Trainer (commit 6218db0: EMA, the gradient noise scale and LARS on, step 2 of tests/trainer/run/data/format1.yaml)
resumes with today's code and continues to step 4 as that code continued it (its step-4 weights, weight average
and noise-scale state were saved beside it by running 6218db0's `bigbatch train --resume` on this file)."""

import shutil
from pathlib import Path

import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer

DATA = Path(__file__).resolve().parent / "data"


def test_a_checkpoint_from_before_the_split_resumes_and_continues_as_it_did(tmp_path):
    for name in ("format1_step2.pt", "format1_step2.pt.sha256"):
        shutil.copy(DATA / name, tmp_path / name)
    trainer = Trainer(load_recipe(DATA / "format1.yaml"), tmp_path / "run", LocalCollective(),
                      resume=str(tmp_path / "format1_step2.pt"))
    assert trainer.step == 2
    trainer.fit()
    after = torch.load(tmp_path / "run" / "checkpoints" / "step_00000004.pt", weights_only=True)
    expected = torch.load(DATA / "format1_step4_expected.pt", weights_only=True)
    assert after["step"] == expected["step"] == 4
    for part in ("model", "ema"):
        assert after[part].keys() == expected[part].keys()
        for key, value in expected[part].items():
            torch.testing.assert_close(after[part][key], value, msg=f"{part}.{key}")
    assert after["gradient_noise"]["updates"] == expected["gradient_noise"]["updates"] == 2
    for key in ("grad_sq", "trace"):
        assert abs(after["gradient_noise"][key] - expected["gradient_noise"][key]) <= 1e-4 * abs(
            expected["gradient_noise"][key])
