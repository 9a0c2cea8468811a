"""deploy/: every manifest parses and validates offline, and every name, port and image agrees."""

import re
from pathlib import Path

import pytest

from helpers import serving
from helpers.config import PROJECT_ROOT

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
LABEL = "app.kubernetes.io/name"


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
    schema.ServeDeploySchema.model_validate(config)
    assert config["http_options"]["port"] == serving.HTTP_PORT
    assert config["http_options"]["host"] == "0.0.0.0"  # inside a pod the proxy must be reachable
    (application,) = config["applications"]
    assert application["name"] == serving.APP_NAME
    assert application["route_prefix"] == serving.ROUTE_PREFIX
    assert application["import_path"] == serving.IMPORT_PATH
    module, attribute = application["import_path"].split(":")
    assert module == serving.__name__ and getattr(serving, attribute) is serving.app_builder
    serving.ServingConfig.from_args(application["args"])  # raises on a wrong or misspelled argument


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
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == serving.HEALTH_PATH
        assert container[probe]["httpGet"]["port"] in (serving.HTTP_PORT, *[n for n, p in ports.items()
                                                                             if p == serving.HTTP_PORT])
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthz"  # Serve's own proxy check
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
    for template in [head["template"]] + [group["template"] for group in groups]:
        for container in containers(template):
            assert container["image"] == serving.IMAGE
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
    assert "dev]" not in dockerfile and "jupyterlab" not in dockerfile, "a serving image needs no authoring tools"
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
