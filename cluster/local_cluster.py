"""A multi-node Ray cluster on this machine: one head and N-1 worker raylets, each its own `ray start --block`.

For trying submission end to end and for tests. Every node runs in a new
session (process group) whose id is recorded in STATE_DIR/cluster.json, so
`down` stops exactly those processes, by process group, and nothing else
(never `ray stop`: other Ray clusters may share the machine). Token
authentication stays on: a fresh token is written to STATE_DIR/auth_token
(mode 0600) and every node, job and jobs client uses it. The dashboard, which
is also the jobs endpoint and runs arbitrary code, binds to 127.0.0.1 unless
`dashboard_host` says otherwise. Every port is picked free and outside Ray's
worker-port range 10002-19999.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from bigbatch.trainer.atomic import write_json_atomic
from bigbatch.trainer.errors import RecipeError, TrainingFailed

STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
RAY_WORKER_PORTS = range(10002, 20000)


@dataclass
class LocalCluster:
    state_dir: str
    gcs_address: str
    dashboard_url: str
    token_file: str
    storage: str
    temp_dir: str
    process_groups: list[int]

    @classmethod
    def load(cls, state_dir: Path) -> "LocalCluster":
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            raise RecipeError(f"{path}: no local cluster is recorded here (start one with `bigbatch cluster up "
                              "--local`)")
        return cls(**json.loads(path.read_text()))

    def save(self) -> None:
        write_json_atomic(Path(self.state_dir) / STATE_FILE, asdict(self))

    def token(self) -> str:
        return Path(self.token_file).read_text().strip()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the kernel says are free now, outside Ray's worker-port range. The sockets stay
    bound until all are picked, so the kernel cannot hand out the same port twice (it does, one at a time)."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
            port = s.getsockname()[1]
            if port not in RAY_WORKER_PORTS:
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def _node_env(token_file: Path) -> dict:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


AGENT_PORT_OPTIONS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                      "--metrics-export-port", "--node-manager-port", "--object-manager-port")


def _agent_ports(ports: list[int]) -> list[str]:
    return [arg for option, port in zip(AGENT_PORT_OPTIONS, ports, strict=True) for arg in (option, str(port))]


def _start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    ray = str(Path(sys.executable).parent / "ray")
    with open(log, "ab") as out:
        return subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _alive_nodes(cluster: LocalCluster) -> set[str] | None:
    """The ids of the nodes the dashboard lists alive (None while it does not answer). Its list may still hold a
    node killed a while ago: count new ids, not the length."""
    request = urllib.request.Request(f"{cluster.dashboard_url}/nodes?view=summary",
                                     headers={"Authorization": f"Bearer {cluster.token()}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            summary = json.loads(response.read())["data"]["summary"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    return {n["raylet"].get("nodeId", "") for n in summary if n.get("raylet", {}).get("state") == "ALIVE"}


def _wait_for_nodes(cluster: LocalCluster, nodes: int, procs: list[subprocess.Popen], logs: list[Path],
                    timeout_s: float, known: set[str] = frozenset(), command: str = "cluster up") -> None:
    """Poll the dashboard until `nodes` nodes other than `known` are alive; a node process that exits fails at
    once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs[:len(procs)], strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise TrainingFailed(f"{command}: a Ray node exited with {proc.returncode}: " + " | ".join(tail))
        if len((_alive_nodes(cluster) or set()) - known) >= nodes:
            return
        time.sleep(0.5)
    raise TrainingFailed(f"{command}: {nodes} {'new ' * bool(known)}node{'s' * (nodes > 1)} did not come up within "
                         f"{timeout_s:g} s (logs: {', '.join(map(str, logs))})")


def _worker_node_args(cluster: LocalCluster, cpus_per_node: float, ports: list[int]) -> list[str]:
    return ["--address", cluster.gcs_address, "--node-ip-address", "127.0.0.1", "--num-cpus", f"{cpus_per_node:g}",
            "--num-gpus", "0", *_agent_ports(ports)]


def up(state_dir: Path, nodes: int = 2, cpus_per_node: float = 1, dashboard_host: str = "127.0.0.1",
       storage: Path | None = None, timeout_s: float = 120) -> LocalCluster:
    """Start a head and `nodes - 1` worker nodes; return the recorded cluster."""
    state_dir = Path(state_dir).resolve()
    if (state_dir / STATE_FILE).exists():
        raise RecipeError(f"{state_dir / STATE_FILE}: a local cluster is already recorded here; "
                          "`bigbatch cluster down` it first")
    if nodes < 1 or cpus_per_node <= 0:
        raise RecipeError(f"cluster up: expected --nodes >= 1 and --cpus-per-node > 0, got {nodes}, {cpus_per_node}")
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / TOKEN_FILE
    token_file.touch(mode=0o600)
    token_file.write_text(secrets.token_hex(32) + "\n")
    storage = Path(storage or state_dir / "storage").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="bb-ray-")  # short: Ray's socket paths must fit in 107 bytes
    # every port of every node picked at once: all distinct
    ports = free_ports(3 + len(AGENT_PORT_OPTIONS) * nodes)
    gcs_port, dashboard_port, client_port = ports[:3]
    node_ports = [ports[3 + i * len(AGENT_PORT_OPTIONS):3 + (i + 1) * len(AGENT_PORT_OPTIONS)] for i in range(nodes)]
    cluster = LocalCluster(str(state_dir), f"127.0.0.1:{gcs_port}",
                           f"http://{'127.0.0.1' if dashboard_host in ('0.0.0.0', '::') else dashboard_host}:"
                           f"{dashboard_port}", str(token_file), str(storage), temp_dir, [])
    env = _node_env(token_file)
    cpus = f"{cpus_per_node:g}"
    head = ["--head", "--port", str(gcs_port), "--node-ip-address", "127.0.0.1", "--num-cpus", cpus,
            "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host", dashboard_host,
            "--dashboard-port", str(dashboard_port), "--ray-client-server-port", str(client_port),
            "--temp-dir", temp_dir, *_agent_ports(node_ports[0])]
    logs = [state_dir / f"node-{i}.log" for i in range(nodes)]
    procs = [_start_node(head, env, logs[0])]
    cluster.process_groups.append(procs[0].pid)
    cluster.save()  # recorded before anything else can fail, so `down` can always clean up
    try:
        _wait_for_nodes(cluster, 1, procs, logs, timeout_s)
        for i in range(1, nodes):
            procs.append(_start_node(_worker_node_args(cluster, cpus_per_node, node_ports[i]), env, logs[i]))
            cluster.process_groups.append(procs[-1].pid)
            cluster.save()
        _wait_for_nodes(cluster, nodes, procs, logs, timeout_s)
    except BaseException:
        down(state_dir)
        raise
    return cluster


def add_node(state_dir: Path, cpus_per_node: float = 1, timeout_s: float = 120) -> LocalCluster:
    """Start one more worker node in a recorded cluster (a node joining: an elastic run grows onto it)."""
    cluster = LocalCluster.load(Path(state_dir).resolve())
    if cpus_per_node <= 0:
        raise RecipeError(f"cluster add-node: expected --cpus-per-node > 0, got {cpus_per_node}")
    known = _alive_nodes(cluster)
    if not known:
        raise TrainingFailed(f"cluster add-node: the cluster in {cluster.state_dir} does not answer")
    log = Path(cluster.state_dir) / f"node-{len(cluster.process_groups)}.log"
    args = _worker_node_args(cluster, cpus_per_node, free_ports(len(AGENT_PORT_OPTIONS)))
    proc = _start_node(args, _node_env(Path(cluster.token_file)), log)
    cluster.process_groups.append(proc.pid)
    cluster.save()
    _wait_for_nodes(cluster, 1, [proc], [log], timeout_s, known, "cluster add-node")
    return cluster


def _group_alive(pgid: int) -> bool:
    try:  # reap the group leader if it is our own exited child (a zombie still counts as a member)
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def down(state_dir: Path, grace_s: float = 20) -> LocalCluster:
    """SIGTERM each recorded node's process group (workers first), SIGKILL what is left after `grace_s`."""
    cluster = LocalCluster.load(Path(state_dir).resolve())
    for pgid in reversed(cluster.process_groups):
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(map(_group_alive, cluster.process_groups)):
        time.sleep(0.2)
    for pgid in cluster.process_groups:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    (Path(cluster.state_dir) / STATE_FILE).unlink(missing_ok=True)
    Path(cluster.token_file).unlink(missing_ok=True)
    return cluster
