"""Every file bigbatch writes goes through here: a temporary file in the same directory, fsynced, renamed.

A reader (a resuming run, a dashboard, another rank) sees either the old file or the whole new one, never a
half-written one, whatever kills the writer. The temporary name carries the pid so two writers never share
one; the directory is fsynced after the rename so the new name itself survives a power cut.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it is fsynced and renamed to `path`; on an error
    it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent) + "\n")


def link_atomic(source: Path, destination: Path) -> None:
    """Make `destination` a hard link to `source`, replacing whatever was there in one rename."""
    tmp = temporary_name(destination)
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, destination)
