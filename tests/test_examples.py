"""The deployment examples: compose, Prometheus, Kubernetes, k3s and kind.

Every YAML file parses; every path the compose file mounts or builds from exists; the
files that refer to each other agree (service names, ports, mount paths, config keys,
the image's user and volume); each mirror config they hand over loads with the mirror's
own loader; probe paths answer 200 on the app; with promtool installed, Prometheus
accepts the compose layout of its config and rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.config import Overrides
from mirror.configfile import load
from tests.e2e.support import require_binary

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
K8S = EXAMPLES / "kubernetes"
IMAGE_STORAGE = "/var/lib/mirror"  # the Dockerfile's VOLUME and MIRROR_STORAGE_PATH

Client = TestClient[web.Request, web.Application]


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path) -> dict[str, Any]:
    (document,) = documents(path)
    assert isinstance(document, dict), path
    return document


YAML_FILES = sorted(
    p for folder in (EXAMPLES, ROOT / "grafana") for p in folder.rglob("*")
    if p.suffix in (".yml", ".yaml")
)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert documents(path), f"{path} holds no document"


def test_the_examples_are_all_there() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in YAML_FILES}
    assert names >= {
        "examples/compose.yml", "examples/prometheus.yml", "examples/k3s-registries.yaml",
        "examples/kind-cluster.yaml", "examples/kubernetes/kustomization.yaml",
        "grafana/alerts.yml", "grafana/provisioning/dashboards/mirror.yml",
        "grafana/provisioning/datasources/prometheus.yml",
    }


def image_uid() -> int:
    (user,) = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(user)


def loads_as_mirror_config(text: str, tmp_path: Path) -> None:
    """Raises ConfigError unless the mirror accepts `text`, with the image's storage
    environment pointed at a temp folder (the image's MIRROR_STORAGE_PATH beats the file)."""
    path = tmp_path / "config.yml"
    path.write_text(text)
    load(path, {"MIRROR_STORAGE_PATH": str(tmp_path / "storage")}, Overrides())


# -- compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return one(EXAMPLES / "compose.yml")


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to examples/) or named volume."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        out[target] = source
    return out


def host_path(source: str) -> Path | None:
    return (EXAMPLES / source).resolve() if source.startswith((".", "/")) else None


def test_compose_refers_to_files_that_exist() -> None:
    document = compose()
    services = document["services"]
    assert set(services) >= {"mirror", "prometheus", "grafana"}
    build = services["mirror"]["build"]
    context = (EXAMPLES / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file()
    assert context == ROOT
    for name, service in services.items():
        for target, source in mounts(service).items():
            path = host_path(source)
            if path is None:
                assert source in document["volumes"], f"{name}: volume {source} not declared"
            else:
                assert path.exists(), f"{name}: {source} (for {target}) does not exist"
                assert ROOT in path.parents, f"{name}: {source} is outside the repository"


def test_compose_wires_mirror_prometheus_and_grafana_together(tmp_path: Path) -> None:
    services = compose()["services"]
    mirror = services["mirror"]
    mirror_mounts = mounts(mirror)
    assert host_path(mirror_mounts[IMAGE_STORAGE]) is None, "the cache belongs in a volume"
    config = host_path(mirror_mounts[mirror["environment"]["MIRROR_CONFIG"]])
    assert config is not None
    loads_as_mirror_config(config.read_text(), tmp_path)
    assert "5000:5000" in mirror["ports"]

    # Prometheus: its config scrapes the mirror service and loads the mounted alerts.
    prometheus_mounts = mounts(services["prometheus"])
    config_flag = next(a for a in services["prometheus"]["command"] if "--config.file=" in a)
    prometheus_config = config_flag.split("=", 1)[1]
    settings = one(host_path(prometheus_mounts[prometheus_config]) or Path())
    (job,) = settings["scrape_configs"]
    assert job["job_name"] == "mirror"  # MirrorDown matches up{job="mirror"}
    assert job["static_configs"][0]["targets"] == ["mirror:5000"]
    config_dir = Path(prometheus_config).parent
    for rule_file in settings["rule_files"]:
        source = prometheus_mounts[(config_dir / rule_file).as_posix()]
        assert host_path(source) == ROOT / "grafana" / "alerts.yml"

    # Grafana: the provisioning folder, the dashboard where the provider looks for it, and
    # the data source at the Prometheus service.
    grafana_mounts = mounts(services["grafana"])
    provisioning = host_path(grafana_mounts["/etc/grafana/provisioning"])
    assert provisioning == ROOT / "grafana" / "provisioning"
    (provider,) = one(provisioning / "dashboards" / "mirror.yml")["providers"]
    dashboards = [t for t, s in grafana_mounts.items()
                  if host_path(s) == ROOT / "grafana" / "mirror-dashboard.json"]
    assert dashboards and Path(dashboards[0]).parent == Path(provider["options"]["path"])
    (source,) = one(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert urlsplit(source["url"]).hostname == "prometheus"
    assert urlsplit(source["url"]).port == 9090


def test_prometheus_accepts_the_compose_layout(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    service = compose()["services"]["prometheus"]
    config = next(a for a in service["command"] if "--config.file=" in a).split("=", 1)[1]
    for target, source in mounts(service).items():
        path = host_path(source)
        if path is not None and path.is_file():
            copy = tmp_path / target.lstrip("/")
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / config.lstrip("/"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout


# -- Kubernetes -----------------------------------------------------------------------------


def k8s_objects() -> dict[str, dict[str, Any]]:
    kustomization = one(K8S / "kustomization.yaml")
    objects = {}
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization names {resource}, which does not exist"
        for document in documents(path):
            objects[document["kind"]] = document
    return objects


def test_the_kubernetes_example_fits_together(tmp_path: Path) -> None:
    objects = k8s_objects()
    assert set(objects) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels
    assert service["spec"]["selector"].items() <= labels
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 5000}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == image_uid()

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounted = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    claim = mounted[IMAGE_STORAGE]["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["MIRROR_CONFIG"]["value"])
    config_map = objects["ConfigMap"]
    assert mounted[str(config_path.parent)]["configMap"]["name"] == config_map["metadata"]["name"]
    config_text = config_map["data"][config_path.name]
    loads_as_mirror_config(config_text, tmp_path)
    config = yaml.safe_load(config_text)
    assert config["storage"]["path"] == IMAGE_STORAGE
    # Credentials the config expands come from the environment the Deployment sets.
    for variable in re.findall(r"\$\{(\w+)", config_text):
        assert variable in env, f"config.yml uses ${{{variable}}}, the Deployment does not set it"


async def test_the_probe_paths_answer_200(mirror_client: Client) -> None:
    (container,) = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        async with mirror_client.get(container[probe]["httpGet"]["path"]) as response:
            assert response.status == 200, probe


# -- k3s and kind ------------------------------------------------------------------------------


def test_k3s_sends_each_registry_to_a_mirror_upstream_of_its_name() -> None:
    mirrors = one(EXAMPLES / "k3s-registries.yaml")["mirrors"]
    assert "docker.io" in mirrors
    config_map = k8s_objects()["ConfigMap"]
    upstreams = yaml.safe_load(config_map["data"]["config.yml"])["upstreams"]
    for registry, entry in mirrors.items():
        # containerd adds ?ns=<registry>, which picks the upstream of that name.
        assert registry in upstreams, f"no upstream named {registry} in the example config"
        for endpoint in entry["endpoint"]:
            parts = urlsplit(endpoint)
            assert parts.scheme in ("http", "https") and parts.hostname and parts.path == ""


def test_kind_nodes_read_registry_hosts_from_certs_d() -> None:
    cluster = one(EXAMPLES / "kind-cluster.yaml")
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (patch,) = cluster["containerdConfigPatches"]
    registry = tomllib.loads(patch)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry["config_path"] == "/etc/containerd/certs.d"
