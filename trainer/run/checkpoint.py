"""Checkpoints that a crash or a kill cannot corrupt.

Each checkpoint is `checkpoints/step_NNNNNNNN.pt` (a plain `torch.save` dict,
loadable with `torch.load(path, weights_only=True)`) plus a `.sha256` sidecar.
Both are written to temporary files, fsynced, then renamed, data file first: a
checkpoint without a matching sidecar is an interrupted write and is skipped.
The newest `keep` step checkpoints are kept, plus `best.pt` (a hard link to the
step checkpoint with the best held-out top-1).
"""

import hashlib
import io
import random
import re
from pathlib import Path

import numpy as np
import torch

from bigbatch.trainer.atomic import link_atomic, write_atomic
from bigbatch.trainer.records.track import notice

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` atomically, with its checksum sidecar."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    write_atomic(path, data)
    write_atomic(_sidecar(path), f"{hashlib.sha256(data).hexdigest()}  {len(data)}\n")


def read_verified(path: Path) -> bytes:
    """The checkpoint's bytes, read once and checked against its sidecar; ValueError says what is wrong."""
    sidecar = _sidecar(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if not sidecar.is_file():
        raise ValueError(f"{path}: no checksum file (interrupted write?)")
    try:
        digest, size = sidecar.read_text().split()
    except ValueError:
        raise ValueError(f"{path}: unreadable checksum file") from None
    data = path.read_bytes()
    if len(data) != int(size):
        raise ValueError(f"{path}: truncated ({len(data)} of {size} bytes)")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path}: checksum mismatch (corrupt)")
    return data


def checkpoint_problem(path: Path) -> str | None:
    """None if `path` is complete and matches its checksum, else what is wrong with it."""
    try:
        read_verified(path)
    except ValueError as e:
        return str(e).removeprefix(f"{path}: ")
    return None


class _BufferReader(io.RawIOBase):
    """A seekable file over a buffer, for torch.load without a copy (io.BytesIO copies all but `bytes`)."""

    def __init__(self, data):
        super().__init__()
        self.view, self.position = memoryview(data).cast("B"), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = max(min(len(buffer), len(self.view) - self.position), 0)
        buffer[:count] = self.view[self.position:self.position + count]
        self.position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = offset + {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.view)}[whence]
        return self.position

    def tell(self) -> int:
        return self.position


def load_bytes(data: bytes | memoryview, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint from bytes already verified (or a view of them: read in place, not copied).
    weights_only=True: a checkpoint can never run code."""
    source = io.BytesIO(data) if isinstance(data, bytes) else _BufferReader(data)
    return torch.load(source, map_location=map_location, weights_only=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a verified checkpoint (one read of the file)."""
    return load_bytes(read_verified(path), map_location)


class CheckpointDir:
    """The run's checkpoints/ directory: save with retention, find the newest valid one."""

    def __init__(self, directory: Path, keep: int = 3):
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def step_files(self) -> list[Path]:
        """Step checkpoints, newest first."""
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.iterdir() if STEP_FILE.match(p.name)]
        return sorted(files, key=lambda p: p.name, reverse=True)

    def save(self, state: dict, step: int, is_best: bool = False) -> Path:
        path = self.path_for(step)
        save_checkpoint(state, path)
        if is_best:
            self._link_best(path)
        self._prune()
        return path

    def _link_best(self, path: Path) -> None:
        for src, dst in ((path, self.directory / "best.pt"), (_sidecar(path), self.directory / "best.pt.sha256")):
            link_atomic(src, dst)

    def _prune(self) -> None:
        for old in self.step_files()[self.keep:]:
            _sidecar(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)

    def newest_verified(self, report=notice) -> tuple[Path, bytes] | None:
        """Newest checkpoint that verifies, with its bytes (read once); corrupt or truncated ones are reported
        and skipped."""
        for path in self.step_files():
            try:
                return path, read_verified(path)
            except ValueError as e:
                report(f"bigbatch: skipping checkpoint {path}: {str(e).removeprefix(f'{path}: ')}")
        return None

    def latest_valid(self, report=notice) -> Path | None:
        found = self.newest_verified(report)
        return found[0] if found else None


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states, in types weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch's generators from (seed, step, rank): dropout and other random layers differ between
    ranks, and a run resumed at any step with the same world size draws what an uninterrupted run draws (with
    another world size the ranks, and so the masks, differ; data order, augmentation and mixup do not)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1))
