"""The cluster configs parse and say what matters: pinned images, GPU resources, auth, storage, bigbatch entrypoints."""

import re
import shlex
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "cluster" / "configs"
REPO = CONFIGS.parents[1]
IMAGE = "YOUR_REGISTRY/bigbatch:0.1"


def test_dockerfile_builds_on_the_pinned_ray_gpu_image_with_the_pinned_dependencies():
    text = (CONFIGS / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-py311-gpu$", text, re.M)
    assert "-c constraints.txt" in text
    for path in re.findall(r"^COPY \S+ (\S+) ", text, re.M):
        assert (REPO / path).exists(), path


def test_aws_launcher_config_has_gpu_workers_a_local_only_dashboard_and_token_auth():
    config = yaml.safe_load((CONFIGS / "aws-gpu.yaml").read_text())
    assert config["provider"]["type"] == "aws" and config["docker"]["image"] == IMAGE
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes and nodes[config["head_node_type"]]["resources"]["CPU"] == 0
    gpu = nodes["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and re.match(r"^(p\d|g\d)", gpu["node_config"]["InstanceType"])
    assert gpu["max_workers"] <= config["max_workers"]
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if "ray start" in c)
    assert any("/mnt/runs" in option for option in config["docker"]["run_options"])


def test_kuberay_cluster_and_job_agree_and_run_bigbatch():
    cluster, pvc = yaml.safe_load_all((CONFIGS / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((CONFIGS / "kuberay" / "rayjob.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"] == "2.60.0"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = cluster["spec"]["workerGroupSpecs"]
    pods = [head] + [g["template"]["spec"]["containers"][0] for g in workers]
    for pod in pods:
        assert pod["image"] == IMAGE
        env = {e["name"]: e for e in pod["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "bigbatch-ray-token"
        assert any(m["mountPath"] == "/mnt/runs" for m in pod["volumeMounts"])
    assert all(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
               for g in workers)
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["bigbatch", "train"] and "--resume" in argv
    recipe = Path(argv[2])
    assert recipe.parts[:4] == ("/", "home", "ray", "bigbatch") and (REPO / Path(*recipe.parts[4:])).is_file()
    assert argv[argv.index("--out") + 1].startswith("/mnt/runs/")
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert {e["name"] for e in submitter["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


def test_aws_gpu_nodes_use_efa_in_one_zone_and_placement_group():
    """NCCL falls back to TCP unless the nodes have EFA interfaces, share a placement group (one zone), and
    the container sees the devices and has libfabric + aws-ofi-nccl."""
    config = yaml.safe_load((CONFIGS / "aws-gpu.yaml").read_text())
    assert "," not in config["provider"]["availability_zone"]
    node = config["available_node_types"]["gpu_worker"]["node_config"]
    assert node["Placement"]["GroupName"]
    interfaces = node["NetworkInterfaces"]
    assert node["InstanceType"].startswith("p4d") and len(interfaces) == 4  # p4d.24xlarge: 4 network cards
    assert all(i["InterfaceType"] == "efa" for i in interfaces)
    assert sorted(i["NetworkCardIndex"] for i in interfaces) == [0, 1, 2, 3]
    options = " ".join(config["docker"]["run_options"])
    assert "--device=/dev/infiniband" in options and "memlock=-1" in options and "FI_PROVIDER=efa" in options
    dockerfile = (CONFIGS / "Dockerfile").read_text()
    assert "efa_installer.sh" in dockerfile and "--skip-kmod" in dockerfile and "ofi-nccl" in dockerfile
    assert re.search(r"^ARG EFA=1$", dockerfile, re.M)
