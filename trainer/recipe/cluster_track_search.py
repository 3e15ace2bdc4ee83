"""The recipe's cluster, bn, track and search sections: where and on how many workers a run trains, how
BatchNorm statistics are shared between them, what the run reports to (wandb, TensorBoard, the gradient
noise scale), and the settings of `bigbatch search`.

Each section checks its own fields in `__post_init__` (keys relative to it); rules across sections are
`Recipe.__post_init__`'s (schema.py).
"""

from dataclasses import dataclass
from urllib.parse import urlparse

from bigbatch.trainer.recipe.fields import FieldProblem, setting


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    workers: int = setting(1, min=1, help="data-parallel workers (world size)")
    min_workers: int = setting(0, min=0, help="elastic runs: the fewest workers the run goes on with after losing "
                               "some (0 = cluster.workers, a fixed group); the global batch is held at every size")
    backend: str = setting("local", choices=("local", "torch", "horovod"),
                           help="local = one plain process; torch = Ray Train workers over torch.distributed; "
                                "horovod = Horovod workers launched by Ray (`make horovod`)")
    cpus_per_worker: float = setting(1.0, min=0.0, help="CPUs Ray reserves per worker")
    gpus_per_worker: float = setting(0.0, min=0.0, help="GPUs per worker (> 0: nccl and CUDA)")
    address: str = setting("", help="Ray cluster address; empty = start Ray embedded on this machine")
    max_failures: int = setting(0, min=0, help="worker-group restarts after a worker fails (resuming from the "
                                               "latest checkpoint)")
    storage_path: str = setting("", help="where Ray Train keeps reported checkpoints; must be seen by every node "
                                "(shared directory or s3:// / gs:// URI); empty = <run dir>/ray")
    start_timeout_s: float = setting(300.0, min=1.0, help="fail if the worker group cannot start (no free or "
                                     "replacement node) within this many seconds")
    restart_timeout_s: float = setting(60.0, min=1.0, help="elastic runs: how long a restart waits to place its "
                                       "workers before it asks again with what is left (Ray counts a lost node "
                                       "as present until its death is noticed and its view refreshes: tens of seconds)")
    watch_nodes: bool = setting(True, help="elastic runs: the driver watches Ray's node table and, once a node is "
                                "marked dead, restarts the group on the nodes alive at once instead of after "
                                "restart_timeout_s (cluster/node_loss.py)")
    connect_timeout_s: float = setting(15.0, min=1.0, help="fail if cluster.address does not answer within this "
                                       "many seconds")

    @property
    def elastic(self) -> bool:
        """Whether the group may run on fewer workers than cluster.workers (cluster.min_workers)."""
        return 0 < self.min_workers < self.workers

    @property
    def world_sizes(self) -> list[int]:
        """Every world size the group may have: cluster.min_workers (or cluster.workers) .. cluster.workers."""
        return list(range(self.min_workers or self.workers, self.workers + 1))

    def __post_init__(self) -> None:
        if self.backend == "local" and self.workers != 1:
            raise FieldProblem("workers", f"the 'local' backend runs exactly 1 worker, got {self.workers}")
        if self.min_workers > self.workers:
            raise FieldProblem("min_workers", f"{self.min_workers} is more than cluster.workers ({self.workers})")
        if self.elastic and self.backend == "horovod":
            raise FieldProblem("min_workers", "an elastic group needs cluster.backend: torch (Ray Train); horovod "
                                              "runs a fixed group")
        if self.backend == "horovod" and self.gpus_per_worker != int(self.gpus_per_worker):
            raise FieldProblem("gpus_per_worker", f"Horovod gives each worker whole GPUs (NCCL cannot share one "
                                                  f"between ranks); got {self.gpus_per_worker:g}, expected 0, 1, 2, ...")
        if self.address not in ("", "auto", "local") and split_address(self.address) is None:
            raise FieldProblem("address", f"expected HOST:PORT or SCHEME://HOST:PORT, got {self.address!r}")


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address HOST:PORT or SCHEME://HOST:PORT (e.g. ray://head:10001), else None."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is no number, or out of range
        return None
    return (host, port) if host and port else None


@dataclass(frozen=True, kw_only=True)
class BatchNormConfig:
    sync: str = setting("none", choices=("none", "all", "group"),
                        help="cross-replica BatchNorm: none, over all workers, or over groups of bn.group_size")
    group_size: int = setting(1, min=1, help="workers per BatchNorm group with sync: group")


@dataclass(frozen=True, kw_only=True)
class TrackConfig:
    wandb: str = setting("auto", choices=("auto", "online", "offline", "disabled"),
                         help="auto = WANDB_MODE if set, else online with an API key, else offline (wandb sync later)")
    project: str = setting("bigbatch", help="wandb project")
    entity: str = setting("", help="wandb entity (team or user); empty = your default")
    tensorboard: bool = setting(True, help="TensorBoard event files in RUN_DIR/tensorboard (rank 0), for "
                                "`bigbatch dashboard`: the local dashboard, no account or network")
    noise_scale: bool = setting(True, help="the gradient noise scale B_simple (McCandlish et al. 2018), the batch "
                                "beyond which larger batches stop paying: on each log step of a step with more than "
                                "one micro-batch (world size x accumulation > 1), from one micro-batch's gradient "
                                "and the global one; step records get grad_sq_norm_est, grad_var_est and "
                                "gradient_noise_scale, the summary its advice")
    noise_scale_decay: float = setting(0.95, min=0.0, below=1.0, help="decay of the moving averages of the "
                                       "squared norm of G and tr(Sigma), per measurement (log step)")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    population: int = setting(50, min=2, help="bigbatch search: candidates per generation (Guo et al.: 50)")
    generations: int = setting(20, min=1, help="bigbatch search: generations of the evolution (20)")
    parents: int = setting(10, min=1, help="bigbatch search: the top candidates of all scored so far that "
                           "mutate and cross over (10)")
    mutations: int = setting(25, min=0, help="bigbatch search: mutated candidates per generation (25)")
    mutation_prob: float = setting(0.1, min=0.0, max=1.0, help="bigbatch search: probability that a mutation "
                                   "redraws a gene (0.1)")
    crossovers: int = setting(25, min=0, help="bigbatch search: crossover candidates per generation (25)")
    max_macs_m: float = setting(0.0, min=0.0, help="bigbatch search: cap on a candidate's multiply-adds in "
                                "millions at data.image_size, counted by the catalogue's counter; 0 = none")
    max_latency_ms: float = setting(0.0, min=0.0, help="bigbatch search: cap on a candidate's latency at batch 1 "
                                    "in ms on the scoring actors' device, from a per-block table measured once "
                                    "there (OUT/latency.json); 0 = none")
    recalibrate_images: int = setting(20000, min=1, help="bigbatch search: training images that recompute "
                                      "BatchNorm statistics before a candidate is scored (Guo et al.: 20,000)")
    workers: int = setting(0, min=0, help="bigbatch search: scoring actors run side by side on the cluster "
                           "(cluster.cpus_per_worker / gpus_per_worker each); 0 = cluster.workers")
    random_baseline: bool = setting(True, help="bigbatch search: also score as many uniform random candidates "
                                    "under the same caps, for comparison")
    supernet_run: str = setting("", help="bigbatch search: run directory of a trained supernet to search; "
                                "empty = train it first into OUT/supernet")
    retrain: list[str] = setting([], help="bigbatch search: KEY=VALUE overrides for OUT/best.yaml, the recipe "
                                 "that trains the found network from scratch (e.g. train.epochs=90)")
    verify: int = setting(0, min=0, help="bigbatch search: ranking check: train the top-k candidates of the "
                          "evolution and k of the random baseline alone (search.verify_retrain) and report "
                          "Kendall's tau between supernet score and their held-out top-1; 0 = off")
    verify_retrain: list[str] = setting(["train.epochs=1"], help="bigbatch search: KEY=VALUE overrides for the "
                                        "brief stand-alone training of search.verify (trained without "
                                        "data.holdout's examples, scored on them)")

    def __post_init__(self) -> None:
        if self.parents > self.population:
            raise FieldProblem("parents", f"{self.parents} is more than search.population ({self.population})")

