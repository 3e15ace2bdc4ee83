"""Run a function in `world` real processes joined in a gloo process group (file:// rendezvous).

The processes are forked by a fork server (multiprocessing's "forkserver": a fresh interpreter started once a
session) that has imported what the ranks import - torch, torch.distributed and torch._dynamo, the digits'
sklearn, the trainer, its TensorBoard writer, timm's norms, and pytest for the test modules - so that a rank
does not spend seconds of CPU importing them again, `world` of them at once on a machine of few cores. Each
rank is still its own process with its own gloo connections, and runs in the caller's current environment (set
in it before `fn` runs: the server's own is from when it started). The trainer's data loader workers are forked
from processes holding these same modules already."""

import multiprocessing
import os
import tempfile

import torch.multiprocessing as mp

PRELOAD = ["torch", "torch.distributed", "torch._dynamo", "torch.utils.tensorboard", "sklearn.datasets", "timm",
           "pytest", "bigbatch.trainer.run.loop", "bigbatch.cluster.backends.torch_dist"]


def _join_then_run(rank: int, world: int, init_file: str, env: dict, fn, args: tuple) -> None:
    import torch.distributed as dist

    from bigbatch.cluster.backends.torch_dist import init_process_group

    os.environ.clear()
    os.environ.update(env)
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
    multiprocessing.set_forkserver_preload(PRELOAD)  # read when the server starts: the first call of a session
    mp.start_processes(_join_then_run, args=(world, init_file, dict(os.environ), fn, args), nprocs=world,
                       join=True, start_method="forkserver")
