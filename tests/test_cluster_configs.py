"""cluster/ and docs/cluster.md, checked as far as a machine without AWS or Kubernetes allows.

* The launcher YAML through Ray's own ``prepare_config`` + ``validate_config``; its pins against
  pyproject.toml; no keys; the dashboard on 127.0.0.1; token authentication; every shell command parses.
* The KubeRay RayJob and RayCluster against the ``openAPIV3Schema`` of the KubeRay v1.7.0 CRDs
  (tests/data/kuberay/), strictly: an unknown field is an error, as with ``kubectl apply``'s strict
  field validation; the pod templates of the MLflow manifests against the same PodTemplateSpec schema.
* Services ClusterIP only, secrets only by reference.
* Every ``ray …`` command in docs/cluster.md through Ray's own CLI parser; every ``python jobs/run.py``
  command (docs and RayJob entrypoint) through jobs/run.py's parser and the engine's config validation.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"
SCHEMAS = REPO / "tests" / "data" / "kuberay"
DOCS = REPO / "docs" / "cluster.md"
RAY_VERSION, TORCH_VERSION = "2.60.0", "2.13.0"
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key\s*[:=]|AWS_SECRET_ACCESS_KEY\s*[:=]\s*\S"
                          r"|postgres(?:ql)?://[^/@\s:]+:[^/@\s]+@|stringData|kind:\s*Secret\b", re.I)


def _yaml(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def _yaml_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


# -- the launcher -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher():
    return _yaml("aws-gpu.yaml")


def _commands(config) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in config.get(k) or []]


def test_cluster_launcher_yaml_validates_with_rays_own_checks(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws" and prepared["head_node_type"] == "head"
    # a broken file fails the same check (the check can fail)
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "eight"
    with pytest.raises(Exception):
        validate_config(prepare_config(broken))


def test_gpu_workers_are_spot_and_autoscaled(launcher):
    gpu = launcher["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] == 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= launcher["max_workers"]
    assert launcher["idle_timeout_minutes"] > 0
    head = launcher["available_node_types"][launcher["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"]  # the head holds the drivers: on demand


def test_launcher_pins_match_pyproject(launcher):
    """Ray 2.60.0 on Python 3.11 images, torch 2.13.0 per node kind, and every ``==`` pin of
    pyproject.toml's dependencies installed at that version."""
    import tomllib

    docker = launcher["docker"]
    for image in (docker["head_image"], docker["worker_image"]):
        assert image.startswith(f"rayproject/ray:{RAY_VERSION}-py311-"), image
    assert docker["worker_image"].endswith("-gpu")
    head = " ".join(launcher["head_setup_commands"])
    worker = " ".join(launcher["worker_setup_commands"])
    assert f"torch=={TORCH_VERSION}" in head and "whl/cpu" in head
    assert f"torch=={TORCH_VERSION}" in worker and "whl/cu128" in worker
    everywhere = " ".join(launcher["setup_commands"])
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if "==" in d and not d.startswith("torch")]
    assert pins
    for pin in pins:
        assert pin in everywhere, f"{pin} (pyproject.toml) is not installed as such on the nodes"


def test_launcher_has_no_keys_and_uses_instance_profiles(launcher):
    text = (CLUSTER / "aws-gpu.yaml").read_text()
    assert not SECRET_VALUE.search(text)
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    for name, node in launcher["available_node_types"].items():
        assert node["node_config"]["IamInstanceProfile"]["Name"], name
        assert node["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name


def test_launcher_keeps_the_dashboard_private_and_requires_the_token(launcher):
    text = (CLUSTER / "aws-gpu.yaml").read_text()
    assert "0.0.0.0" not in text
    head_start = [c for c in launcher["head_start_ray_commands"] if "ray start" in c]
    assert len(head_start) == 1 and "--dashboard-host=127.0.0.1" in head_start[0]
    starts = [c for c in _commands(launcher) if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_launcher_mlflow_server_gets_its_store_uri_from_the_environment(launcher):
    mlflow = [c for c in launcher["head_start_ray_commands"] if "mlflow server" in c]
    assert len(mlflow) == 1
    cmd = mlflow[0]
    assert "export MLFLOW_BACKEND_STORE_URI=" in cmd and "secretsmanager" in cmd
    assert "--backend-store-uri" not in cmd  # it would show in `ps` on the head
    assert "--artifacts-destination s3://" in cmd and "--host 0.0.0.0" not in cmd
    assert "psycopg2-binary" in " ".join(launcher["head_setup_commands"])


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_every_launcher_command_is_valid_shell(launcher):
    for cmd in _commands(launcher):
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r}: {r.stderr}"
    r = subprocess.run(["bash", "-n", "-c", "echo 'unterminated"], capture_output=True, text=True)
    assert r.returncode != 0  # bash -n does reject a broken line


# -- KubeRay manifests against the CRD schemas --------------------------------------------------


def _strict(schema):
    """The schema with unknown fields rejected wherever the CRD lists an object's fields (what the
    API server does with strict field validation; ``x-kubernetes-preserve-unknown-fields`` stays open)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validators():
    jsonschema = pytest.importorskip("jsonschema")
    out = {}
    for kind, name in (("RayJob", "rayjobs"), ("RayCluster", "rayclusters")):
        schema = _strict(json.loads((SCHEMAS / f"ray.io_{name}.v1.schema.json").read_text()))
        out[kind] = jsonschema.Draft7Validator(schema)
    cluster = json.loads((SCHEMAS / "ray.io_rayclusters.v1.schema.json").read_text())
    pod_template = cluster["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"]
    out["PodTemplateSpec"] = jsonschema.Draft7Validator(_strict(pod_template))
    return out


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name,kind", [("kuberay-rayjob.yaml", "RayJob"), ("kuberay-raycluster.yaml", "RayCluster")])
def test_kuberay_manifest_matches_the_crd_schema(validators, name, kind):
    doc = _yaml(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert not _errors(validators[kind], doc)


def test_the_schema_check_catches_typos_and_bad_values(validators):
    job = _yaml("kuberay-rayjob.yaml")
    typo = copy.deepcopy(job)
    typo["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParam"] = {}
    assert any("rayStartParam" in e for e in _errors(validators["RayJob"], typo))
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    assert _errors(validators["RayJob"], bad)
    pod = copy.deepcopy(job)
    pod["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imag"] = "x"
    assert _errors(validators["RayJob"], pod)


def _cluster_specs():
    job = _yaml("kuberay-rayjob.yaml")
    return [("kuberay-rayjob.yaml", job["spec"]["rayClusterSpec"]),
            ("kuberay-raycluster.yaml", _yaml("kuberay-raycluster.yaml")["spec"])]


@pytest.mark.parametrize("name,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_clusters_are_private_pinned_and_authenticated(name, spec):
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"] == {"mode": "token", "secretName": "raypipe-ray-token"}
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    groups = [head, *spec["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, images  # one image: driver and workers run the same code
    for g in spec["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1 and g["minReplicas"] == 0 < g["maxReplicas"]
    for g in groups:
        for c in g["template"]["spec"]["containers"]:
            refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
            assert "raypipe-s3" in refs
            assert not any("value" in e and "secret" in e["name"].lower() for e in c.get("env", []))


def test_rayjob_shape():
    job = _yaml("kuberay-rayjob.yaml")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/app"  # where cluster/Dockerfile puts the repository


def test_no_secret_values_anywhere_in_cluster_files():
    for path in sorted(CLUSTER.iterdir()):
        if path.is_file():
            assert not SECRET_VALUE.search(path.read_text()), path


# -- MLflow on Kubernetes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_docs():
    docs = _yaml_all("mlflow.yaml")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_mlflow_manifests_have_what_kubernetes_needs(mlflow_docs, validators):
    kinds = sorted(k for k, _ in mlflow_docs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "NetworkPolicy", "Service", "Service", "StatefulSet"]
    for (kind, name), d in mlflow_docs.items():
        assert d["apiVersion"] == {"Deployment": "apps/v1", "StatefulSet": "apps/v1",
                                   "NetworkPolicy": "networking.k8s.io/v1"}.get(kind, "v1"), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        if kind in ("Deployment", "StatefulSet"):
            template = d["spec"]["template"]
            assert d["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            assert not _errors(validators["PodTemplateSpec"], template), name
    bad = copy.deepcopy(mlflow_docs[("Deployment", "raypipe-mlflow")]["spec"]["template"])
    bad["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["nam"] = "x"
    assert _errors(validators["PodTemplateSpec"], bad)


def test_mlflow_services_are_cluster_internal_and_match_their_pods(mlflow_docs):
    services = {n: d for (k, n), d in mlflow_docs.items() if k == "Service"}
    pods = [d for (k, _), d in mlflow_docs.items() if k in ("Deployment", "StatefulSet")]
    assert set(services) == {"raypipe-mlflow", "raypipe-postgres"}
    for name, svc in services.items():
        spec = svc["spec"]
        assert spec["type"] == "ClusterIP" and "externalIPs" not in spec
        assert all("nodePort" not in p for p in spec["ports"])
        backing = [p for p in pods if spec["selector"].items() <= p["spec"]["template"]["metadata"]["labels"].items()]
        assert len(backing) == 1, name
        ports = {p["name"] for c in backing[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in spec["ports"]), name
    assert mlflow_docs[("ConfigMap", "raypipe-mlflow")]["data"]["MLFLOW_TRACKING_URI"] == "http://raypipe-mlflow:5000"


def test_mlflow_uses_postgres_and_s3_with_credentials_from_secrets(mlflow_docs):
    c = mlflow_docs[("Deployment", "raypipe-mlflow")]["spec"]["template"]["spec"]["containers"][0]
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"])
    assert c["command"] == ["mlflow", "server"]
    assert re.fullmatch(r"postgresql://[a-z]+@raypipe-postgres:5432/[a-z]+", args["backend-store-uri"])
    assert args["artifacts-destination"].startswith("s3://")
    assert "*" not in args["allowed-hosts"].split(",")
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "raypipe-mlflow-db", "key": "password"}
    pg = mlflow_docs[("StatefulSet", "raypipe-postgres")]["spec"]["template"]["spec"]["containers"][0]
    pg_env = {e["name"]: e for e in pg["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "raypipe-mlflow-db", "key": "password"}
    for container in (c, pg):
        for e in container["env"]:
            assert not ("value" in e and re.search(r"pass|secret|token|key", e["name"], re.I)), e


def test_network_policies_select_the_pods_they_guard(mlflow_docs):
    pol = mlflow_docs[("NetworkPolicy", "raypipe-mlflow")]["spec"]
    assert pol["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "raypipe-mlflow"}
    assert pol["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    pg = mlflow_docs[("NetworkPolicy", "raypipe-postgres")]["spec"]
    assert pg["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "raypipe-mlflow"}


def test_dockerfile_pins_the_projects_versions():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base == f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    assert f"torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cu128" in text
    assert "psycopg2-binary==" in text and "pip install --no-cache-dir -e ." in text
    assert "COPY --chown=ray:users jobs ./jobs" in text  # RayJob's working_dir /app holds jobs/
    for name in ("kuberay-rayjob.yaml", "kuberay-raycluster.yaml", "mlflow.yaml"):
        images = re.findall(r"image: (\S+)", (CLUSTER / name).read_text())
        assert "ghcr.io/example/raypipe:0.1.0" in images, name


def test_kubectl_dry_run_when_a_cluster_is_reachable():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    probe = subprocess.run(["kubectl", "version", "--request-timeout=5s"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("kubectl --dry-run=client still needs an API server for discovery, and none is reachable "
                    "here; the manifests are checked against the CRD schemas instead")
    for name in ("mlflow.yaml", "kuberay-rayjob.yaml", "kuberay-raycluster.yaml"):
        r = subprocess.run(["kubectl", "apply", "--dry-run=client", "-f", str(CLUSTER / name)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


# -- docs/cluster.md: every command -------------------------------------------------------------


def _doc_commands() -> list[str]:
    text = DOCS.read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            if cmd.strip() and not cmd.lstrip().startswith("#"):
                cmds.append(cmd.strip())
    return cmds


def _jobs_run():
    spec = importlib.util.spec_from_file_location("_raypipe_jobs_run", REPO / "jobs" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_run_py(argv: list[str]):
    """``python jobs/run.py ARGS`` parses, and the method's config resolves with those options
    (raypipe's own validation, which names a bad field) without starting anything."""
    from raypipe.engine import resolve
    from raypipe.methods import load_methods

    assert argv[:2] == ["python", "jobs/run.py"], argv
    run = _jobs_run()
    args = run.parser().parse_args(argv[2:])
    cfg = resolve(load_methods().get(args.method, "--method"), args.config, args.set, run.cli_overrides(args))
    return args, cfg


def _ray_cli(argv: list[str]):
    """Ray's own click parser for ``ray …`` (options and arguments checked, nothing run)."""
    from ray.scripts.scripts import cli

    assert argv[0] == "ray"
    group, rest = cli, argv[1:]
    while hasattr(group, "commands") and rest and rest[0] in group.commands:
        group, rest = group.commands[rest[0]], rest[1:]
    assert not hasattr(group, "commands"), f"not a ray command: {argv}"
    return group, group.make_context(group.name, list(rest))


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        argv = argv[1:]
    return argv


def test_docs_name_files_that_exist():
    cmds = _doc_commands()
    assert any(c.startswith("ray up ") for c in cmds) and any(c.startswith("ray down ") for c in cmds)
    for cmd in cmds:
        for path in re.findall(r"(?:^|\s)(?:-f )?(cluster/[\w.\-]+)", cmd):
            assert (REPO / path).is_file(), f"{cmd}: {path}"


def test_every_ray_command_in_the_docs_parses_with_rays_cli():
    seen = set()
    for cmd in _doc_commands():
        argv = _strip_env(shlex.split(cmd))
        if not argv or argv[0] != "ray":
            continue
        if "|" in argv:
            argv = argv[: argv.index("|")]
        command, ctx = _ray_cli(argv)
        seen.add(command.name)
        if command.name in ("up", "down", "dashboard", "exec", "get-head-ip"):
            assert ctx.params["cluster_config_file"] == "cluster/aws-gpu.yaml"
        if command.name == "submit":
            assert ctx.params["address"] == "http://127.0.0.1:8265" and ctx.params["working_dir"] == "."
    assert {"up", "down", "dashboard", "submit", "get-auth-token"} <= seen, seen
    with pytest.raises(Exception):  # the parser does reject what Ray does not know
        _ray_cli(["ray", "job", "submit", "--adress", "http://127.0.0.1:8265"])


def test_every_jobs_run_command_parses_and_its_config_validates():
    from raypipe.errors import RaypipeError

    entrypoints = [c.split(" -- ", 1)[1] for c in _doc_commands() if c.startswith("ray job submit") and " -- " in c]
    entrypoints.append(" ".join(_yaml("kuberay-rayjob.yaml")["spec"]["entrypoint"].split()))
    assert len(entrypoints) >= 3
    for entry in entrypoints:
        args, cfg = _check_run_py(shlex.split(entry))
        assert args.method == "mtts" and args.use_gpu and args.num_workers >= 2
        assert cfg.ray.use_gpu and cfg.data.source_manifest.startswith("s3://")
        assert cfg.ray.storage_path.startswith("s3://")
    with pytest.raises(RaypipeError):  # a bad knob is refused by the same check
        _check_run_py(shlex.split(entrypoints[0]) + ["--set", "stages.target.irm.alpha=-1"])


def test_docs_reach_dashboard_and_mlflow_through_port_forwards_only():
    text = DOCS.read_text()
    cmds = _doc_commands()
    assert "ray dashboard cluster/aws-gpu.yaml" in cmds
    assert "kubectl port-forward svc/raypipe-mlflow 5000:5000" in cmds
    assert "kubectl port-forward svc/raypipe-head-svc 8265:8265" in cmds
    assert any(c.startswith("ssh ") and "-L 5000:" in c for c in cmds)
    assert "RAY_AUTH_MODE=token" in text
    assert "LoadBalancer" not in text.replace("no LoadBalancer", "") and "NodePort" not in text
    # the RayCluster's head Service name is KubeRay's <cluster name>-head-svc
    assert f"svc/{_yaml('kuberay-raycluster.yaml')['metadata']['name']}-head-svc" in text
