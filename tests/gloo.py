"""Run a function in `world` real processes joined in a gloo process group (file:// rendezvous)."""

import os
import tempfile

import torch.multiprocessing as mp


def _join_then_run(rank: int, world: int, init_file: str, fn, args: tuple) -> None:
    import torch.distributed as dist

    from bigbatch.cluster.backends.torch_dist import init_process_group

    init_process_group("gloo", f"file://{init_file}", rank, world)
    fn(rank, world, *args)
    # leave together and tear the group down: a process that exits while gloo's threads still run can abort
    # ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


def spawn_gloo(fn, world: int, *args) -> None:
    """fn(rank, world, *args) in each process; an assertion failing in any process fails the caller."""
    fd, init_file = tempfile.mkstemp(prefix="bigbatch-pg-")
    os.close(fd)
    os.unlink(init_file)
    mp.spawn(_join_then_run, args=(world, init_file, fn, args), nprocs=world, join=True)
