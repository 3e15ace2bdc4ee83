"""Checkpoint files: atomic, verified, never able to run code."""

import pickle

import pytest
import torch

from bigbatch.trainer.run.checkpoint import (
    CheckpointDir,
    checkpoint_problem,
    load_checkpoint,
    save_checkpoint,
)


def test_roundtrip_and_plain_weights_only_load(tmp_path):
    path = tmp_path / "step_00000001.pt"
    save_checkpoint({"model": {"w": torch.arange(4.0)}, "step": 1}, path)
    assert checkpoint_problem(path) is None
    plain = torch.load(path, weights_only=True)
    assert plain["step"] == 1 and torch.equal(plain["model"]["w"], torch.arange(4.0))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:50] + b"X" + p.read_bytes()[51:]), "checksum mismatch"),
    (lambda p: p.with_name(p.name + ".sha256").unlink(), "no checksum file"),
])
def test_damaged_checkpoint_is_detected(tmp_path, damage, needle):
    path = tmp_path / "step_00000001.pt"
    save_checkpoint({"model": {"w": torch.zeros(1000)}, "step": 1}, path)
    damage(path)
    assert needle in checkpoint_problem(path)
    with pytest.raises(ValueError, match=needle):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoint_with_code_is_refused_even_with_valid_checksum(tmp_path):
    path = tmp_path / "step_00000001.pt"
    save_checkpoint({"model": {}, "step": 1, "evil": _Payload()}, path)
    assert checkpoint_problem(path) is None
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_retention_keeps_last_k_and_best_and_skips_corrupt(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    for step in range(1, 6):
        ckpts.save({"model": {}, "step": step}, step, is_best=step == 2)
    assert [p.name for p in ckpts.step_files()] == ["step_00000005.pt", "step_00000004.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 2
    newest = ckpts.step_files()[0]
    newest.write_bytes(newest.read_bytes()[:10])
    reports: list[str] = []
    assert ckpts.latest_valid(report=reports.append).name == "step_00000004.pt"
    assert len(reports) == 1 and "step_00000005.pt" in reports[0] and "truncated" in reports[0]


def test_load_bytes_reads_a_view_in_place_and_still_refuses_code(tmp_path):
    from bigbatch.trainer.run.checkpoint import load_bytes, read_verified

    path = tmp_path / "step_00000001.pt"
    save_checkpoint({"model": {"w": torch.arange(6.0)}, "step": 1}, path)
    received = torch.frombuffer(bytearray(read_verified(path)), dtype=torch.uint8)  # as a broadcast leaves it
    state = load_bytes(memoryview(received.numpy()))
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.arange(6.0))
    save_checkpoint({"evil": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_bytes(memoryview(bytearray(read_verified(path))))
