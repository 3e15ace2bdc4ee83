"""Submit recipes to a Ray cluster as jobs and follow them, through the Ray Jobs SDK.

The recipe is loaded and validated here first, so a recipe error never reaches
the cluster. The job carries the project (`working_dir`, without .venv, runs
and caches) and the resolved recipe (an environment variable read by
`cluster.job_entry`); its driver runs `bigbatch train` on the cluster into
STORAGE/NAME with `--resume auto`, so submitting the same name again continues
that run from its newest checkpoint. The address and token come from the
options, the environment (BIGBATCH_ADDRESS, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH)
or the local cluster recorded by `bigbatch cluster up --local`.
"""

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from bigbatch.cluster.ray_launch import check_reachable, ray_logging_level
from bigbatch.trainer.errors import RecipeError, TrainingFailed
from bigbatch.trainer.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
UPLOAD_EXCLUDES = [".venv", ".git", "runs", ".bigbatch", "bench/results", "**/__pycache__", "*.egg-info",
                   ".pytest_cache", ".ruff_cache"]
RECIPE_ENV = "BIGBATCH_RECIPE_YAML"
STOP_GRACE_S = 120  # `jobs stop`: SIGTERM, then this long for the workers' checkpoint before Ray's SIGKILL
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Endpoint:
    address: str
    token: str | None
    storage: str | None = None


def resolve_endpoint(address: str | None, token_file: str | None, state_dir: str | None) -> Endpoint:
    """Where the jobs API is, and the token for it: options, then environment, then the local cluster."""
    from bigbatch.cluster.local_cluster import STATE_FILE, LocalCluster

    local = None
    if state_dir and (Path(state_dir) / STATE_FILE).is_file():
        local = LocalCluster.load(Path(state_dir))
    address = address or os.environ.get("BIGBATCH_ADDRESS") or (local.dashboard_url if local else None)
    if not address:
        raise RecipeError("--address: no cluster given (expected --address http://HEAD:8265, BIGBATCH_ADDRESS, "
                          "or a local cluster from `bigbatch cluster up --local`)")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise RecipeError(f"{token_file}: --token-file: cannot read the token ({e.strerror})") from None
    elif os.environ.get("RAY_AUTH_TOKEN"):
        token = os.environ["RAY_AUTH_TOKEN"].strip()
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    else:
        token = local.token() if local else None
    storage = local.storage if local and address == local.dashboard_url else None
    return Endpoint(address, token, storage)


# Ray SDK modules that set their own logger's level when imported, so the "ray" logger's level does not reach them
PINNED_SDK_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")


def quiet_ray_sdk(verbose: bool) -> None:
    """Ray's SDK logging during a submit or a followed job (packaging.py and working_dir.py on the upload,
    sdk.py's "Uploading package"), at the level `bigbatch train` gives Ray's loggers: errors only unless
    `verbose`."""
    import logging

    import ray.job_submission  # noqa: F401  (imported first: it pins its loggers' levels on import)

    level = ray_logging_level(verbose)
    for name in ("ray", *PINNED_SDK_LOGGERS):
        logging.getLogger(name).setLevel(level)


def client(endpoint: Endpoint, timeout_s: float = 10):
    """A JobSubmissionClient, or a one-line error for an unreachable address or a refused token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    parsed = urlparse(endpoint.address if "://" in endpoint.address else f"http://{endpoint.address}")
    check_reachable(f"{parsed.hostname}:{parsed.port or 8265}", timeout_s, key="--address")
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    try:
        return JobSubmissionClient(endpoint.address, headers=headers)
    except AuthenticationError as e:
        reason = "refused the token" if endpoint.token else "requires a token and none was given"
        raise RecipeError(f"--token-file: the cluster at {endpoint.address} {reason} "
                          f"({str(e).splitlines()[0]})") from None


def submit(recipe_path: str, overrides: list[str], endpoint: Endpoint, name: str | None,
           storage: str | None) -> str:
    """Validate, then submit; returns the job id."""
    recipe = load_recipe(recipe_path, overrides)  # recipe errors stop here, before any network call
    name = name or Path(recipe_path).stem
    if not NAME.match(name):
        raise RecipeError(f"--name: expected letters, digits, '.', '_' or '-' (at most 64), got {name!r}")
    storage = storage or endpoint.storage or recipe.cluster.storage_path
    if not storage:
        raise RecipeError("--storage: no storage path (a directory every node sees, e.g. a shared file system); "
                          "pass --storage or set cluster.storage_path")
    if "://" in storage:
        raise RecipeError(f"--storage: expected a directory every node mounts (the run directory is written with "
                          f"plain file I/O), got {storage!r}; put object-store URIs in cluster.storage_path, where "
                          "Ray keeps its checkpoint copies")
    if recipe.cluster.address:
        raise RecipeError(f"{recipe_path}: cluster.address: a submitted run uses the cluster it is submitted to; "
                          "leave cluster.address empty")
    run_dir = f"{storage.rstrip('/')}/{name}"
    jobs = client(endpoint)
    job_id = f"bigbatch-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with staged_package() as package:
        runtime_env = {"working_dir": str(REPO), "excludes": UPLOAD_EXCLUDES, "py_modules": [package],
                       "env_vars": {RECIPE_ENV: yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False),
                                    "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S), "PYTHONUNBUFFERED": "1"}}
        return jobs.submit_job(entrypoint=f"python -m bigbatch.cluster.job_entry --name {name} --out {run_dir}",
                               submission_id=job_id, runtime_env=runtime_env,
                               metadata={"bigbatch_run": name, "run_dir": run_dir})


@contextlib.contextmanager
def staged_package() -> Iterator[str]:
    """This checkout's code as a `bigbatch` package folder (trainer/, optim/, cluster/ under bigbatch/), for Ray's
    py_modules: the job imports the code it was submitted with, not whatever version the cluster's image has
    installed. Ray uploads it during submit_job, so the folder is only needed until then."""
    with tempfile.TemporaryDirectory(prefix="bigbatch-submit-") as tmp:
        package = Path(tmp) / "bigbatch"
        package.mkdir()
        (package / "__init__.py").write_text('"""bigbatch, as submitted with a job."""\n')
        for part in ("trainer", "optim", "cluster"):
            shutil.copytree(REPO / part, package / part, ignore=shutil.ignore_patterns("__pycache__"))
        yield str(package)


def _known(jobs, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as e:
        if "does not exist" in str(e):
            raise RecipeError(f"{job_id}: no such job on this cluster (see `bigbatch jobs list`)") from None
        raise


def list_jobs(jobs) -> list[str]:
    rows = sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0)
    lines = [f"{'job':44} {'status':10} {'run':20} started"]
    for job in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000))
        run = (job.metadata or {}).get("bigbatch_run", "-")
        lines.append(f"{job.submission_id or job.job_id:44} {job.status.value:10} {run:20} {started}")
    return lines


def status(jobs, job_id: str, log_lines: int = 20) -> tuple[str, list[str]]:
    """The job's status and what to print: its message, and the tail of its log when it failed."""
    info = _known(jobs, job_id)
    lines = [f"{job_id}: {info.status.value}" + (f" ({info.message})" if info.message else "")]
    if info.status.value == "FAILED" and log_lines:
        tail = jobs.get_job_logs(job_id).rstrip().splitlines()[-log_lines:]
        lines += [f"last {len(tail)} log lines:", *("  " + line for line in tail)]
    return info.status.value, lines


def logs(jobs, job_id: str, follow: bool) -> str:
    """Print the job's log; with `follow`, stream it until the job ends. Returns the final status."""
    _known(jobs, job_id)
    if not follow:
        sys.stdout.write(jobs.get_job_logs(job_id))
        return jobs.get_job_status(job_id).value

    async def stream() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(stream())
    deadline = time.monotonic() + 30  # the log stream can close a moment before the status settles
    while not jobs.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.2)
    return jobs.get_job_status(job_id).value


def stop(jobs, job_id: str) -> str:
    _known(jobs, job_id)
    jobs.stop_job(job_id)
    return (f"{job_id}: stop requested; the workers checkpoint and exit (up to {STOP_GRACE_S} s before Ray "
            "kills them)")


EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 143}


def exit_code(final_status: str) -> int:
    if final_status not in EXIT_CODES:
        raise TrainingFailed(f"job ended in an unexpected state {final_status}")
    return EXIT_CODES[final_status]
