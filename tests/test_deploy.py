"""deploy/: every manifest parses and validates offline, and every name, port and image agrees."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import config, serving
from helpers.config import PROJECT_ROOT

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
LABEL = "app.kubernetes.io/name"
PROXY_HEALTH_PATH = "/-/healthz"  # answered by Serve's proxy without calling a replica
RAY_HEALTH = {("/api/gcs_healthz", 8265), ("/api/local_raylet_healthz", 52365)}  # dashboard, dashboard agent
REQUEST_TIMEOUT_S = config.profile("full").serve_request_timeout_s  # the image sets WORKBOOK_PROFILE=full
SHUTDOWN_MARGIN_S = 10  # time for Ray to stop after SIGTERM, on top of the preStop drain


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def manifests() -> dict[str, dict]:
    """Every Kubernetes object under deploy/, by kind."""
    found = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in load_all(path):
            if "kind" in doc:
                assert doc["kind"] not in found, f"two {doc['kind']} objects; the tests expect one each"
                found[doc["kind"]] = doc
    return found


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def validate_serve_config(config: dict) -> None:
    """Serve's own schema accepts it, and the app is ours with arguments ServingConfig accepts."""
    schema = pytest.importorskip("ray.serve.schema")
    parsed = schema.ServeDeploySchema.model_validate(config)
    # Serve's schema accepts unknown keys silently: a misspelled option would be ignored, so refuse them.
    assert_known_fields(config, schema.ServeDeploySchema)
    assert_known_fields(config["http_options"], schema.HTTPOptionsSchema)
    for application in config["applications"]:
        assert_known_fields(application, schema.ServeApplicationSchema)
        for deployment in application.get("deployments", []):
            assert_known_fields(deployment, schema.DeploymentSchema)
            assert deployment["name"] == serving.DEPLOYMENT_NAME, "an override for a deployment that does not exist"
    assert parsed.http_options.request_timeout_s == REQUEST_TIMEOUT_S, \
        "request_timeout_s must match helpers.config's full profile (serve_request_timeout_s)"
    assert config["http_options"]["port"] == serving.HTTP_PORT
    assert config["http_options"]["host"] == "0.0.0.0"  # inside a pod the proxy must be reachable
    (application,) = config["applications"]
    assert application["name"] == serving.APP_NAME
    assert application["route_prefix"] == serving.ROUTE_PREFIX
    assert application["import_path"] == serving.IMPORT_PATH
    module, attribute = application["import_path"].split(":")
    assert module == serving.__name__ and getattr(serving, attribute) is serving.app_builder
    serving.ServingConfig.from_args(application["args"])  # raises on a wrong or misspelled argument
    built = serving.app_builder(application["args"])._bound_deployment  # what `serve run` deploys
    assert built.name == serving.DEPLOYMENT_NAME
    overrides = {d["name"]: d for d in application.get("deployments", [])}
    shutdown_s = overrides.get(built.name, {}).get("graceful_shutdown_timeout_s",
                                                   built._deployment_config.graceful_shutdown_timeout_s)
    assert shutdown_s >= REQUEST_TIMEOUT_S, "a replica Serve stops must be allowed to finish its requests"
    autoscaling = application["args"].get("autoscaling")
    if autoscaling is not None:
        from ray.serve.config import AutoscalingConfig

        assert_known_fields(autoscaling, AutoscalingConfig)
        parsed = built._deployment_config.autoscaling_config
        assert parsed is not None and parsed.min_replicas == autoscaling["min_replicas"]
        assert parsed.max_replicas == autoscaling["max_replicas"]
        assert 0 < parsed.target_ongoing_requests <= application["args"]["max_ongoing_requests"]
        assert parsed.upscale_delay_s < parsed.downscale_delay_s, "scale up fast, down slowly"


def assert_known_fields(values: dict, model) -> None:
    unknown = set(values) - set(model.model_fields)
    assert not unknown, f"{model.__name__} has no field(s) {sorted(unknown)}"


def check_shutdown(pod_spec: dict, container: dict) -> None:
    """preStop drains for at least the request timeout, and the grace period covers the whole drain."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "/app/deploy/prestop_drain.py"], command
    options = dict(zip(command[2::2], command[3::2]))
    assert int(options["--port"]) == serving.HTTP_PORT
    settle_s, drain_s = float(options["--settle-s"]), float(options["--timeout-s"])
    assert settle_s >= 5, "give the endpoints a few seconds to drop the pod"
    http_options = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())["http_options"]
    keep_alive_s = http_options.get("keep_alive_timeout_s", 90)  # 90: Serve's default
    assert drain_s >= REQUEST_TIMEOUT_S + keep_alive_s, "the drain must outlast the longest request"
    grace_s = pod_spec["terminationGracePeriodSeconds"]
    assert grace_s > REQUEST_TIMEOUT_S
    assert grace_s >= settle_s + drain_s + SHUTDOWN_MARGIN_S, "the grace period includes the preStop time"


def http_probe(container: dict, name: str) -> tuple[str, object]:
    get = container[name]["httpGet"]
    return get["path"], get["port"]


def test_expected_files_exist():
    for name in ("Dockerfile", "README.md", "serve_config.yaml", "kubernetes/deployment.yaml",
                 "kubernetes/service.yaml", "kubernetes/hpa.yaml", "kuberay/rayservice.yaml"):
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"


def test_every_yaml_parses():
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        assert load_all(path), f"{path} is empty"


def test_builtin_kinds_validate_offline():
    found = manifests()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "RayService"} <= set(found)
    for kind, doc in found.items():
        if kind == "RayService":
            continue  # a CRD: checked field by field below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_would_catch_a_broken_manifest():
    broken = manifests()["Deployment"]
    containers(broken["spec"]["template"])[0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_deployment_service_and_hpa_agree():
    found = manifests()
    deployment, service, hpa = found["Deployment"], found["Service"], found["HorizontalPodAutoscaler"]
    for doc in (deployment, service, hpa):
        assert doc["metadata"]["name"] == serving.APP_NAME
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = containers(template)
    assert container["image"] == serving.IMAGE
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == serving.HTTP_PORT
    target = service_port["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == serving.HTTP_PORT
    http_port_names = (serving.HTTP_PORT, *[name for name, port in ports.items() if port == serving.HTTP_PORT])
    # Startup may ask a replica (no traffic yet); readiness and liveness must not queue behind requests.
    assert http_probe(container, "startupProbe")[0] == serving.HEALTH_PATH
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert http_probe(container, probe)[1] in http_port_names
    for probe in ("readinessProbe", "livenessProbe"):
        assert http_probe(container, probe)[0] == PROXY_HEALTH_PATH, f"{probe} must not go through a replica"
    check_shutdown(template["spec"], container)
    reference = hpa["spec"]["scaleTargetRef"]
    assert (reference["kind"], reference["name"], reference["apiVersion"]) == (
        "Deployment", deployment["metadata"]["name"], deployment["apiVersion"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu_request = float(container["resources"]["requests"]["cpu"])
    args = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())["applications"][0]["args"]
    assert args["num_replicas"] * args["threads_per_replica"] <= cpu_request  # replicas fit the pod's CPUs


def test_serve_config_is_a_valid_serve_deploy_config():
    validate_serve_config(yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()))


def test_rayservice_required_fields_and_agreement():
    service = manifests()["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    assert service["metadata"]["name"] == serving.APP_NAME
    spec = service["spec"]
    assert isinstance(spec["serveConfigV2"], str), "serveConfigV2 must be a YAML string, not a mapping"
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    validate_serve_config(serve_config)
    autoscaling = serve_config["applications"][0]["args"]["autoscaling"]
    cluster = spec["rayClusterConfig"]
    ray_version = pytest.importorskip("ray").__version__
    assert cluster["rayVersion"] == ray_version
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and "template" in head  # required by the CRD
    head_ports = {port["name"]: port["containerPort"] for port in containers(head["template"])[0]["ports"]}
    assert head_ports["serve"] == serving.HTTP_PORT  # KubeRay's serve Service targets the port named "serve"
    groups = cluster["workerGroupSpecs"]
    assert groups, "at least one worker group"
    worker_cpus = 0
    for group in groups:
        for required in ("groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"):
            assert required in group, f"worker group lacks {required}"
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        worker_cpus += group["maxReplicas"] * float(containers(group["template"])[0]["resources"]["requests"]["cpu"])
    assert autoscaling["max_replicas"] <= worker_cpus  # the largest Serve scale fits the largest cluster
    assert {"min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s",
            "downscale_delay_s"} <= set(autoscaling), "Serve autoscales on requests in progress, with explicit delays"
    # Probes: never a replica. Head: Ray's own health (KubeRay deploys Serve only once the head is
    # Ready, so /-/healthz there would never pass). Workers: ready with their Serve proxy, alive with Ray.
    (head_container,) = containers(head["template"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert http_probe(head_container, probe) in RAY_HEALTH
    for group in groups:
        (worker,) = containers(group["template"])
        assert http_probe(worker, "readinessProbe") == (PROXY_HEALTH_PATH, serving.HTTP_PORT)
        assert http_probe(worker, "livenessProbe") in RAY_HEALTH
    assert cluster["enableInTreeAutoscaling"] is True, "Ray's autoscaler adds the pods Serve's replicas need"
    assert any(group["maxReplicas"] > group["minReplicas"] for group in groups), "room for the autoscaler"
    for template in [head["template"]] + [group["template"] for group in groups]:
        for container in containers(template):
            assert container["image"] == serving.IMAGE
            check_shutdown(template["spec"], container)
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                        "template": template}
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_dockerfile_matches_the_project():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    torch_version = re.search(r"^TORCH_VERSION := (\S+)", makefile, re.M).group(1)
    torch_line = dockerfile.index(f"python -m helpers.install_torch --version {torch_version}")
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", dockerfile, re.M)
    assert dockerfile.index("ARG TORCH_INDEX=") < torch_line
    assert torch_line < dockerfile.index('".[serve]"'), "torch (CPU) must be installed before the project"
    logical_lines = dockerfile.replace("\\\n", " ").splitlines()  # join continued RUN lines
    installs = " ".join(line for line in logical_lines if "pip install" in line)
    assert '".[serve]"' in installs and re.findall(r"\.\[([^\]]*)\]", installs) == ["serve"], \
        "the image installs the project with the serve extra only"
    for tool in ("jupyterlab", "nbval", "pytest", "ruff", "dev]", "notebook"):
        assert tool not in installs, f"a serving image needs no authoring tool ({tool})"
    assert "COPY deploy/prestop_drain.py ./deploy/prestop_drain.py" in dockerfile, "the preStop hook's script"
    for package in re.search(r"^MODEL_PACKAGES := (.+)$", makefile, re.M).group(1).split():
        assert package in dockerfile
    assert re.search(rf"^EXPOSE {serving.HTTP_PORT}$", dockerfile, re.M)
    command = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    assert yaml.safe_load(command) == ["serve", "run", "deploy/serve_config.yaml"]
    assert "COPY deploy/serve_config.yaml ./deploy/serve_config.yaml" in dockerfile


def test_readme_names_the_image_and_the_commands():
    readme = (DEPLOY / "README.md").read_text()
    for text in (serving.IMAGE, "docker build -f deploy/Dockerfile", "kubectl apply -f deploy/kubernetes/",
                 "kubectl apply -f deploy/kuberay/rayservice.yaml", str(serving.HTTP_PORT), serving.HEALTH_PATH):
        assert text in readme, f"deploy/README.md should mention {text!r}"


# --- the preStop drain script ----------------------------------------------------------------

def load_drain_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prestop_drain", DEPLOY / "prestop_drain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prestop_drain_counts_only_established_connections_to_the_port(tmp_path):
    drain = load_drain_module()
    table = tmp_path / "tcp"
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [
        "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1\n",  # listening
        "   1: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000 0 2\n",  # client
        "   2: 0100007F:1F40 0100007F:D432 06 00000000:00000000 00:00000000 00000000  1000 0 3\n",  # TIME_WAIT
        "   3: 0100007F:D433 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000 0 4\n",  # outgoing
        "   4: 0100007F:1A0B 0100007F:D434 01 00000000:00000000 00:00000000 00000000  1000 0 5\n",  # other port
    ]
    table.write_text(header + "".join(rows))
    assert drain.open_connections(8000, (str(table), str(tmp_path / "missing"))) == 1
    table.write_text(header + rows[0] + rows[2])
    assert drain.open_connections(8000, (str(table),)) == 0


def test_prestop_drain_waits_for_connections_then_gives_up(monkeypatch):
    drain = load_drain_module()
    readings = iter([2, 1, 0, 0])
    monkeypatch.setattr(drain, "open_connections", lambda port: next(readings))
    monkeypatch.setattr(drain.time, "sleep", lambda seconds: None)
    assert drain.drain(8000, settle_s=0, timeout_s=60) is True
    monkeypatch.setattr(drain, "open_connections", lambda port: 1)
    assert drain.drain(8000, settle_s=0, timeout_s=0.05, poll_s=0.01) is False


# --- building the image (opt-in) ----------------------------------------------------------------

def test_docker_image_builds():
    """Build deploy/Dockerfile for real: opt-in, since it downloads torch and takes minutes."""
    if os.environ.get("WORKBOOK_DOCKER_BUILD") != "1":
        pytest.skip("building the image takes minutes and needs network access; "
                    "enable with WORKBOOK_DOCKER_BUILD=1")
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no `docker` command on PATH: install Docker (or a compatible builder) to build the image")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"`docker info` failed, no usable Docker daemon: {(info.stderr or info.stdout).strip()[:300]}")
    tag = serving.IMAGE.rsplit(":", 1)[0] + ":test"
    limit_s = float(os.environ.get("WORKBOOK_DOCKER_BUILD_TIMEOUT_S", "1800"))
    build = subprocess.run([docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(PROJECT_ROOT)],
                           capture_output=True, text=True, timeout=limit_s)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # The drain script and the Serve config are in the image, where the manifests expect them.
    check = subprocess.run([docker, "run", "--rm", tag, "python", "-c",
                            "import pathlib, sys; sys.exit(not all(pathlib.Path(p).is_file() for p in "
                            "('/app/deploy/prestop_drain.py', '/app/deploy/serve_config.yaml')))"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
