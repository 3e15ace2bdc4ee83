"""The baseline bench/scaling.py runs under `torchrun`: a plain DistributedDataParallel loop doing the work
of a bigbatch recipe without bigbatch or Ray.

Same as the bigbatch run of that recipe: the model from the same builder and seed, the same synthetic data,
per-worker batch and threads, gloo, each step's global batch a slice of one per-epoch permutation split
by rank, bigbatch's optim.SGD from trainer.build.make_optimizer (same parameter groups) at the recipe's
scaled lr, CrossEntropyLoss. Throughput is measured as bigbatch's metrics records do: global images/s over
windows of `train.log_every_steps` steps, the median of the windows after the first.

    torchrun --nproc-per-node 2 bench/plain_ddp.py RECIPE OUT_JSON
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigbatch.trainer.data import load_data  # noqa: E402
from bigbatch.trainer.models import create_model  # noqa: E402
from bigbatch.trainer.recipe import load_recipe  # noqa: E402
from bigbatch.trainer.recipe.plan import make_plan  # noqa: E402
from bigbatch.trainer.run.build import make_optimizer  # noqa: E402


def main(recipe_path: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    recipe = load_recipe(recipe_path, [f"cluster.workers={world}"])
    torch.set_num_threads(recipe.train.threads)
    data = load_data(recipe.data, recipe.seed)
    images, labels = data.train.images, data.train.labels
    plan = make_plan(recipe, len(labels), world)
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, data.num_classes, data.channels, data.image_size)
    optimizer = make_optimizer(recipe.optim, model, plan.scaled_lr)
    ddp = DistributedDataParallel(model) if world > 1 else model
    criterion = nn.CrossEntropyLoss()
    batch, steps, window = recipe.data.batch_size, plan.total_steps, recipe.train.log_every_steps
    marks, step = [time.perf_counter()], 0
    while step < steps:
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(recipe.seed + step))
        for i in range(min(len(labels) // (batch * world), steps - step)):
            idx = perm[(i * world + rank) * batch:(i * world + rank + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(ddp(images[idx]), labels[idx])
            loss.backward()
            optimizer.step()
            step += 1
            if step % window == 0:
                marks.append(time.perf_counter())
    rates = [window * batch * world / (b - a) for a, b in zip(marks, marks[1:], strict=False)][1:]
    if rank == 0:
        Path(out).write_text(json.dumps({"images_per_s": statistics.median(rates), "windows": rates}) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
