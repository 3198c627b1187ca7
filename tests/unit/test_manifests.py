"""Static checks of what CI cannot run: the shell scripts, the deploy manifests, the samples, the image.

We test these aspects:
- every shell script in the repository (*.sh, and files with a sh or bash shebang) passes shellcheck;
- `kubectl kustomize` renders the deploy base, every overlay, each optional component applied to the base
  (tests/unit/kustomizations/; every component has one), the CRD folder and the e2e samples;
- every rendered built-in object is valid against the Kubernetes schemas (kubernetes-validate, strict),
  at the oldest Kubernetes the build Jobs support and at the newest the package knows;
- the base deploys the generated CRD from crds/, unchanged;
- every ServiceBuild in e2e/samples and in the documentation (README.md and docs/) is valid against
  the CRD as the API server checks it (schema, unknown fields, CEL rules) and against the pydantic
  model; the README shows a minimal one and the reference several; the samples' ConfigMap context holds
  every file the Dockerfile copies;
- the operator Deployment: two replicas (a leader and a standby), rolled one at a time, with a
  PodDisruptionBudget; a liveness probe on Kopf's endpoint, readiness on /readyz beside /metrics, the
  Lease's namespace from the downward API, requests and limits, a restricted securityContext with a
  read-only root filesystem and a writable /tmp, and the user the image creates;
- the ClusterRoleBindings give the operator's two ClusterRoles to its ServiceAccount (their rules are derived
  from the code and checked in test_rbac.py, with the namespaced install's RoleBindings);
- the kind overlay runs the locally loaded image and reaches the samples' registry over plain HTTP;
- the webhooks component: a Service on 8082 to the operator's `webhooks` port, which the receiver's
  address names; the secret a file from a Secret volume, never a literal or an environment variable;
- the monitoring component: a Service on 8081 to the operator's `metrics` port, where the default metrics
  address listens; a ServiceMonitor scraping /metrics through that Service; the Grafana dashboard in a
  ConfigMap with the sidecar's label (its queries are checked in test_dashboard.py);
- every FROM in the repository's Dockerfiles names an exact version tag.
"""

import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from servicebuild.api.models import ServiceBuildSpec
from servicebuild.config import Settings, listen_address
from servicebuild.metrics_server import METRICS_PATH
from support import docs, kustomizations
from support.crd_schema import crd_errors
from support.kustomizations import render, require

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "servicebuilds.servicebuild.dev.yaml"
KUSTOMIZATIONS = sorted([*kustomizations.kustomizations(), ROOT / "crds", ROOT / "e2e" / "samples"])
OVERLAYS = sorted((ROOT / "deploy" / "overlays").iterdir())
WITH_WEBHOOKS = kustomizations.APPLIED_COMPONENTS / "webhooks"
WITH_MONITORING = kustomizations.APPLIED_COMPONENTS / "monitoring"
NOT_BUILT_IN = ("servicebuild.dev/", "monitoring.coreos.com/")
"""API groups kubernetes-validate has no schema of: the CRD's, the Prometheus Operator's."""
# The build Jobs set appArmorProfile in the securityContext, a field of Kubernetes 1.30 and later.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def objects(directory: Path, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in render(directory) if obj["kind"] == kind]


def deployment(directory: Path) -> dict[str, Any]:
    (found,) = objects(directory, "Deployment")
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


SHELL_SHEBANG = re.compile(rb"^#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b")


def shell_scripts() -> list[str]:
    """Every shell script git knows or would add: *.sh, and files with a sh or bash shebang (.ci/run)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    scripts = set()
    for name in listed:
        path = ROOT / name
        if not path.is_file():
            continue
        if name.endswith(".sh"):
            scripts.add(name)
        else:
            with path.open("rb") as file:
                if SHELL_SHEBANG.match(file.readline()):
                    scripts.add(name)
    return sorted(scripts)


def test_every_shell_script_passes_shellcheck():
    scripts = shell_scripts()
    assert "e2e/demo.sh" in scripts
    result = subprocess.run(
        [require("shellcheck"), "--external-sources", *scripts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=relative)
def test_kustomization_renders(directory):
    assert render(directory)


def test_every_component_is_rendered_applied_to_the_base() -> None:
    components = kustomizations.components()
    assert ROOT / "deploy" / "components" / "webhooks" in components
    applied = set()
    for directory in kustomizations.applied_components():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert [(directory / path).resolve() for path in kustomization["resources"]] == [
            ROOT / "deploy" / "base"
        ]
        applied |= {(directory / path).resolve() for path in kustomization["components"]}
    assert applied == set(components)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=relative)
def test_rendered_objects_are_valid_kubernetes(directory, version):
    built_in = [obj for obj in render(directory) if not obj["apiVersion"].startswith(NOT_BUILT_IN)]
    assert built_in
    errors = []
    for obj in built_in:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.absolute_path))
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {error.message}")
    assert errors == []


def test_base_deploys_the_generated_crds_unchanged():
    generated = {
        crd["metadata"]["name"]: crd
        for crd in (
            yaml.safe_load(path.read_text())
            for path in sorted(CRD_FILE.parent.glob("*.servicebuild.dev.yaml"))
        )
    }
    deployed = {
        crd["metadata"]["name"]: crd for crd in objects(ROOT / "deploy" / "base", "CustomResourceDefinition")
    }
    assert (
        set(deployed) == set(generated) == {"servicebuilds.servicebuild.dev", "builderpools.servicebuild.dev"}
    )
    for name, crd in generated.items():
        assert deployed[name]["spec"] == crd["spec"]


def samples() -> list[dict[str, Any]]:
    return objects(ROOT / "e2e" / "samples", "ServiceBuild")


def test_samples_include_a_default_and_a_non_default_target():
    targets = [sample["spec"].get("target") for sample in samples()]
    assert None in targets
    assert any(targets)


def documented_servicebuilds() -> list[Any]:
    """The ServiceBuild examples users copy from the README and docs/, named by page and name."""
    return [
        pytest.param(servicebuild, id=f"{docs.relative(page)}:{servicebuild['metadata']['name']}")
        for page in docs.pages()
        for servicebuild in docs.servicebuilds(page)
    ]


def test_readme_shows_a_minimal_servicebuild():
    """The first build of the README: a source and an output, nothing else."""
    specs = [servicebuild["spec"] for servicebuild in docs.servicebuilds(docs.README)]
    assert {"source", "output"} in [set(spec) for spec in specs]


def test_the_reference_shows_servicebuilds():
    assert len(docs.servicebuilds(docs.DOCS / "servicebuild.md")) > 1


@pytest.mark.parametrize(
    "servicebuild",
    [pytest.param(sample, id=sample["metadata"]["name"]) for sample in samples()]
    + documented_servicebuilds(),
)
def test_every_sample_servicebuild_is_valid_against_the_crd_and_the_model(servicebuild):
    assert crd_errors(servicebuild) == []
    ServiceBuildSpec.model_validate(servicebuild["spec"])


def test_sample_context_holds_every_file_its_dockerfile_copies():
    (context,) = objects(ROOT / "e2e" / "samples", "ConfigMap")
    files = set(context["data"])
    assert {sample["spec"]["source"]["configMap"]["name"] for sample in samples()} == {
        context["metadata"]["name"]
    }
    for line in context["data"]["Dockerfile"].splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from=") for word in words):
            for source in words[1:-1]:
                assert fnmatch.filter(files, source), f"{source} is not a key of the ConfigMap"


@pytest.mark.parametrize(
    "directory", [ROOT / "deploy" / "base", *OVERLAYS, *kustomizations.applied_components()], ids=relative
)
def test_operator_deployment_is_two_replicas_and_restricted(directory):
    spec = deployment(directory)["spec"]
    assert spec["replicas"] == 2, "a leader and a standby"
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    (budget,) = objects(directory, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": spec["selector"]}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "servicebuild-operator"
    pod_security = pod.get("securityContext", {})
    (container,) = pod["containers"]
    security = container["securityContext"]

    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}
    assert not security.get("privileged", False)
    image_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert image_user is not None
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == tuple(map(int, image_user.groups()))

    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    tmp = mounts["/tmp"]  # noqa: S108 - the path a volume is mounted at, not a file the test writes
    assert {"name": tmp, "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]

    env = {item["name"]: item.get("value") for item in container["env"]}
    probe = container["livenessProbe"]["httpGet"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}[probe["port"]]
    assert env["SERVICEBUILD_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{port}{probe['path']}"
    readiness = container["readinessProbe"]["httpGet"]
    metrics_port = {p["name"]: p["containerPort"] for p in container["ports"]}[readiness["port"]]
    assert (readiness["path"], metrics_port) == ("/readyz", 8081), "served beside /metrics (default :8081)"
    lease_namespace = next(
        item for item in container["env"] if item["name"] == "SERVICEBUILD_LEASE_NAMESPACE"
    )
    assert lease_namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}

    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])


def test_cluster_role_bindings_name_the_operator_service_account():
    bindings = objects(ROOT / "deploy" / "base", "ClusterRoleBinding")
    (account,) = objects(ROOT / "deploy" / "base", "ServiceAccount")
    bound = {binding["roleRef"]["name"] for binding in bindings}
    assert bound == {"servicebuild-operator", "servicebuild-operator-cluster"}
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": "servicebuild-system",
            }
        ]


def test_kind_overlay_runs_the_loaded_image_and_reaches_the_sample_registry():
    (container,) = deployment(ROOT / "deploy" / "overlays" / "kind")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "servicebuild-operator:dev"
    assert container["imagePullPolicy"] in {"Never", "IfNotPresent"}
    env = {item["name"]: item.get("value", "") for item in container["env"]}
    insecure = {host.strip() for host in env["SERVICEBUILD_INSECURE_REGISTRIES"].split(",")}
    pushed_to = {sample["spec"]["output"]["image"].split("/", 1)[0] for sample in samples()}
    assert pushed_to == {"kind-registry:5000"}
    assert pushed_to <= insecure
    assert 'OPERATOR_IMAGE="servicebuild-operator:dev"' in (ROOT / "e2e" / "lib.sh").read_text()


def test_the_webhooks_component_serves_the_receiver_with_the_secret_from_a_secret():
    (service,) = objects(WITH_WEBHOOKS, "Service")
    operator = deployment(WITH_WEBHOOKS)
    pod = operator["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item for item in container["env"]}

    assert service["metadata"]["namespace"] == operator["metadata"]["namespace"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8082, "webhooks")
    assert listen_address(env["SERVICEBUILD_WEBHOOK_ADDRESS"]["value"]) == (None, ports["webhooks"])

    secret_file = Path(env["SERVICEBUILD_WEBHOOK_SECRET_FILE"]["value"])
    (mount,) = [
        mount for mount in container["volumeMounts"] if secret_file.parent == Path(mount["mountPath"])
    ]
    assert mount["readOnly"] is True
    (volume,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == mount["name"]]
    assert volume["secret"]["items"] == [{"key": "secret", "path": secret_file.name}]
    assert not any("secretKeyRef" in item.get("valueFrom", {}) for item in container["env"])
    assert {item["name"] for item in container["env"]} >= {"SERVICEBUILD_LIVENESS_ENDPOINT", "POD_ID"}


def test_the_monitoring_component_scrapes_the_metrics_port_and_ships_the_dashboard():
    (service,) = objects(WITH_MONITORING, "Service")
    (monitor,) = objects(WITH_MONITORING, "ServiceMonitor")
    (dashboard,) = objects(WITH_MONITORING, "ConfigMap")
    operator = deployment(WITH_MONITORING)
    pod = operator["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"] for item in container["env"]}

    assert "SERVICEBUILD_METRICS_ADDRESS" not in env, "the default address serves the metrics"
    assert listen_address(Settings.model_fields["metrics_address"].default) == (None, ports["metrics"])
    assert service["metadata"]["namespace"] == operator["metadata"]["namespace"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8081, "metrics")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": port["name"], "path": METRICS_PATH, "interval": "30s"},
    ]

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "servicebuild-system"
    (content,) = dashboard["data"].values()
    assert json.loads(content)["panels"]


def test_build_namespace_of_the_samples_allows_rootless_buildkit():
    (namespace,) = objects(ROOT / "e2e" / "samples", "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert {sample["metadata"]["namespace"] for sample in samples()} == {namespace["metadata"]["name"]}


EXACT_TAG = re.compile(r"^[^:@\s]+:[A-Za-z0-9_.-]*\d+\.\d+\.\d+[A-Za-z0-9_.-]*$")


@pytest.mark.parametrize(
    "dockerfile",
    [ROOT / "Dockerfile", *sorted((ROOT / "e2e").glob("**/Dockerfile"))],
    ids=relative,
)
def test_dockerfile_base_images_are_pinned_to_exact_versions(dockerfile):
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    stages: set[str] = set()
    for image, stage in re.findall(r"^FROM\s+(?:--\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE):
        resolved = re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], image)
        if resolved not in stages and resolved != "scratch":
            assert EXACT_TAG.match(resolved), f"{resolved} is not pinned to an exact version tag"
            assert not resolved.endswith(":latest")
        if stage:
            stages.add(stage)
