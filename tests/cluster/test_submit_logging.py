"""`bigbatch submit` and `bigbatch jobs` keep Ray's SDK logging (packaging.py, working_dir.py, sdk.py) out of the
console unless --verbose, at the level `bigbatch train` gives Ray's loggers (issue 29, item 10).

A real submission needs the 2-node cluster of test_submit.py (minutes on this machine), so these test the logging
set-up directly: the function on Ray's loggers, and the command line in a fresh process whose Ray SDK calls are
replaced by stand-ins that log through the same loggers (the lines Ray prints during a submit)."""

import logging
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# the loggers of the lines `submit --follow` showed, and the level each spoke at
SDK_LINES = (("ray._private.runtime_env.packaging", logging.INFO),
             ("ray._private.runtime_env.working_dir", logging.WARNING),
             ("ray._private.runtime_env.py_modules", logging.INFO),
             ("ray.dashboard.modules.dashboard_sdk", logging.INFO),
             ("ray.dashboard.modules.job.sdk", logging.INFO))


def test_quiet_ray_sdk_holds_every_sdk_logger_to_errors_unless_verbose():
    import ray.job_submission  # noqa: F401  (its modules pin their loggers' levels on import)

    from bigbatch.cluster.jobs import quiet_ray_sdk

    try:
        quiet_ray_sdk(verbose=False)
        for name, level in SDK_LINES:
            logger = logging.getLogger(name)
            assert not logger.isEnabledFor(level) and logger.isEnabledFor(logging.ERROR), name
        quiet_ray_sdk(verbose=True)
        for name, level in SDK_LINES:
            assert logging.getLogger(name).isEnabledFor(level), name
    finally:
        quiet_ray_sdk(verbose=True)  # Ray's defaults (INFO) for the tests after this one


FAKE_SDK = '''
import logging, sys
from bigbatch.cluster import jobs
from bigbatch.cluster.cli import main


def say(name, level, message):
    logging.getLogger(name).log(level, message)


def submit(*args, **kwargs):  # what the real submit logs while Ray packages and uploads the project
    import ray.job_submission  # noqa: F401  (as jobs.client does)

    say("ray._private.runtime_env.packaging", logging.INFO, "Creating a file package for local module '/x'.")
    say("ray._private.runtime_env.working_dir", logging.WARNING, "File /x/y is very large (11.20MiB).")
    say("ray.dashboard.modules.job.sdk", logging.INFO, "Uploading package gcs://_ray_pkg_0.zip.")
    say("ray._private.runtime_env.packaging", logging.INFO, "Pushing file package 'gcs://_ray_pkg_0.zip'.")
    return "bigbatch-quickstart-1"


def logs(client, job_id, follow):
    say("ray.dashboard.modules.dashboard_sdk", logging.INFO, "Tailing the job's log.")
    print("bigbatch: finished the run", flush=True)
    return "SUCCEEDED"


jobs.submit, jobs.logs, jobs.client = submit, logs, lambda endpoint: object()
jobs.status = lambda client, job_id, log_lines=20: ("SUCCEEDED", [f"{job_id}: SUCCEEDED"])
sys.exit(main(sys.argv[1:]))
'''
RAY_LINE = re.compile(r"\t(INFO|WARNING) \S+ -- ")  # Ray's format: "DATE TIME\tLEVEL FILE:LINE -- MESSAGE"


def submit_follow(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAKE_SDK, "submit", "recipes/quickstart.yaml", "--address",
                           "http://127.0.0.1:8265", "--storage", "/tmp/bigbatch-unused", "--follow", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_submit_follow_shows_only_bigbatchs_lines_and_rays_with_verbose():
    quiet = submit_follow()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == ["bigbatch-quickstart-1", "bigbatch: finished the run"]
    assert quiet.stderr.splitlines() == ["bigbatch: job bigbatch-quickstart-1: SUCCEEDED"], quiet.stderr
    verbose = submit_follow("--verbose")
    assert verbose.returncode == 0, verbose.stderr
    shown = [line for line in verbose.stderr.splitlines() if RAY_LINE.search(line)]
    assert len(shown) == 5, verbose.stderr  # every line Ray logged
    assert any("WARNING" in line and "very large" in line for line in shown), shown
