"""`bigbatch submit`, `bigbatch jobs ...` and `bigbatch cluster up|down`: the cluster half of the command line."""

import argparse
import sys

DEFAULT_STATE_DIR = ".bigbatch/cluster"


def _endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray jobs API, e.g. http://HEAD:8265 (default: BIGBATCH_ADDRESS, or the "
                                     "local cluster)")
    p.add_argument("--token-file", help="file holding the cluster's auth token (default: RAY_AUTH_TOKEN, "
                                        "RAY_AUTH_TOKEN_PATH, or the local cluster's)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where `cluster up --local` recorded its cluster")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own SDK logging (packaging, uploads); "
                                                          "by default it shows errors only")


def add_commands(sub, recipe_args) -> dict:
    """Register the subcommands on `sub`; return {command: handler}."""
    submit = sub.add_parser("submit", help="validate a recipe and submit it to a Ray cluster as a job")
    recipe_args(submit)
    _endpoint_args(submit)
    submit.add_argument("--name", help="run name (default: the recipe's file name); the same name resumes")
    submit.add_argument("--storage", help="directory or URI every node sees; the run goes to STORAGE/NAME")
    submit.add_argument("--follow", action="store_true", help="stream the job's log until it ends; exit with its "
                                                              "outcome (0 succeeded, 1 failed, 143 stopped)")
    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop submitted jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=type(jobs))
    for name, text in (("list", "jobs on the cluster"), ("status", "a job's state (and its log tail if failed)"),
                       ("logs", "a job's log"), ("stop", "stop a job: its workers checkpoint first")):
        p = jobs_sub.add_parser(name, help=text)
        _endpoint_args(p)
        if name != "list":
            p.add_argument("job_id")
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream until the job ends")
    cluster = sub.add_parser("cluster", help="start or stop a multi-node Ray cluster on this machine")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True, parser_class=type(cluster))
    up = cluster_sub.add_parser("up", help="start a head and worker raylets here (token auth on)")
    up.add_argument("--local", action="store_true", required=True, help="on this machine (the only kind today)")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--cpus-per-node", type=float, default=1.0)
    up.add_argument("--dashboard-host", default="127.0.0.1",
                    help="interface of the dashboard / jobs API; it runs arbitrary code: keep 127.0.0.1 unless "
                         "you know who can reach it")
    up.add_argument("--storage", help="shared run storage (default: STATE_DIR/storage)")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    add = cluster_sub.add_parser("add-node", help="start one more worker node in it (an elastic run grows onto it)")
    add.add_argument("--cpus-per-node", type=float, default=1.0)
    add.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    down = cluster_sub.add_parser("down", help="stop exactly the processes `cluster up` and `add-node` started")
    down.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    return {"submit": cmd_submit, "jobs": cmd_jobs, "cluster": cmd_cluster}


def _endpoint(args: argparse.Namespace):
    from bigbatch.cluster.jobs import resolve_endpoint

    return resolve_endpoint(args.address, args.token_file, args.state_dir)


def cmd_submit(args: argparse.Namespace) -> int:
    from bigbatch.cluster import jobs

    jobs.quiet_ray_sdk(args.verbose)
    endpoint = _endpoint(args)
    job_id = jobs.submit(args.recipe, args.overrides, endpoint, args.name, args.storage)
    print(job_id, flush=True)
    if not args.follow:
        return 0
    client = jobs.client(endpoint)
    final = jobs.logs(client, job_id, follow=True)
    _, lines = jobs.status(client, job_id, log_lines=0)
    print(f"bigbatch: job {lines[0]}", file=sys.stderr)
    return jobs.exit_code(final)


def cmd_jobs(args: argparse.Namespace) -> int:
    from bigbatch.cluster import jobs

    jobs.quiet_ray_sdk(args.verbose)
    client = jobs.client(_endpoint(args))
    if args.jobs_command == "list":
        print("\n".join(jobs.list_jobs(client)))
        return 0
    if args.jobs_command == "status":
        _, lines = jobs.status(client, args.job_id)
        print("\n".join(lines))
        return 0
    if args.jobs_command == "logs":
        final = jobs.logs(client, args.job_id, args.follow)
        return jobs.exit_code(final) if args.follow else 0
    print(jobs.stop(client, args.job_id))
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from bigbatch.cluster import local_cluster

    if args.cluster_command == "up":
        c = local_cluster.up(args.state_dir, args.nodes, args.cpus_per_node, args.dashboard_host, args.storage)
        print(f"bigbatch: {args.nodes} nodes up; jobs API {c.dashboard_url} (token in {c.token_file}); "
              f"storage {c.storage}; stop with: bigbatch cluster down --state-dir {args.state_dir}")
        return 0
    if args.cluster_command == "add-node":
        c = local_cluster.add_node(args.state_dir, args.cpus_per_node)
        print(f"bigbatch: node added (process group {c.process_groups[-1]}); {len(c.process_groups)} started")
        return 0
    c = local_cluster.down(args.state_dir)
    print(f"bigbatch: stopped process groups {', '.join(map(str, c.process_groups))}")
    return 0
