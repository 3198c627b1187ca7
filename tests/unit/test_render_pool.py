"""A builder pool's rendered objects.

We test these aspects:
- each case renders exactly its golden objects (`tests/unit/golden/pools/`; `UPDATE_GOLDEN=1` rewrites them):
  the daemon as a Deployment over an emptyDir, as a StatefulSet over a claim, and the Service;
- every rendered object is valid for Kubernetes 1.30 and the newest schema (strict: unknown fields fail);
- the daemon's Pod has the build Job's security: the BuildKit container's context (Unconfined seccomp and
  AppArmor on that container only), no service-account token, never root;
- buildkitd listens on TCP with mTLS only, from the mounted server Secret, whose certificate's fingerprint
  restarts the daemon when it changes; the Service's port is the daemon's;
- the Secrets: the daemon's has the CA certificate but never its key; the operator's, in its own
  namespace, has the CA and the client certificate and no owner reference;
- names: a pool whose name cannot make a Service name gets a valid one.
"""

import base64
import os
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from servicebuild import naming
from servicebuild.api.pool import BuilderPool
from servicebuild.config import Settings
from servicebuild.pki import KeyPair
from servicebuild.render.job import BUILDKIT_SECURITY_CONTEXT
from servicebuild.render.pool import (
    endpoint,
    render_ca_secret,
    render_daemon,
    render_server_secret,
    render_service,
    server_names,
)
from support.render import GOLDEN, KUBERNETES_VERSIONS, UID

POOL_GOLDEN = GOLDEN / "pools"
SERVER = KeyPair(b"server certificate", b"server key")
CA = KeyPair(b"ca certificate", b"ca key")
CLIENT = KeyPair(b"client certificate", b"client key")
SETTINGS = Settings(buildkit_image="moby/buildkit:v0.32.2-rootless")


def pool(name: str = "builders", **spec: Any) -> BuilderPool:
    return BuilderPool.model_validate(
        {"metadata": {"name": name, "namespace": "shop", "uid": UID, "generation": 2}, "spec": spec}
    )


CASES: dict[str, dict[str, Any]] = {
    "deployment": render_daemon(pool(), SETTINGS, SERVER),
    "statefulset": render_daemon(
        pool(
            storage={"persistentVolumeClaim": {"size": "50Gi", "storageClassName": "fast-ssd"}},
            resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        ),
        SETTINGS,
        SERVER,
    ),
    "service": render_service(pool()),
}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    path = POOL_GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        header = f"# The {case} rendered for a BuilderPool by tests/unit/test_render_pool.py.\n"
        path.write_text(header + yaml.safe_dump(CASES[case], sort_keys=False, width=120))
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 pytest tests/unit/test_render_pool.py"
    assert CASES[case] == yaml.safe_load(path.read_text())


def test_every_golden_file_has_a_case() -> None:
    assert {path.stem for path in POOL_GOLDEN.glob("*.yaml")} == set(CASES)


SECRETS = {
    "server-secret": render_server_secret(pool(), CA, SERVER),
    "ca-secret": render_ca_secret(pool(), "servicebuild-system", CA, CLIENT),
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", [*CASES, *SECRETS])
def test_valid_kubernetes_object(case: str, version: str) -> None:
    kubernetes_validate.validate({**CASES, **SECRETS}[case], version, strict=True)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("case", ["deployment", "statefulset"])
def test_the_daemon_has_the_build_jobs_security(case: str) -> None:
    spec = pod_spec(CASES[case])
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert "securityContext" not in spec, "Unconfined on the container only, never the whole Pod"
    (container,) = spec["containers"]
    assert container["securityContext"] == BUILDKIT_SECURITY_CONTEXT
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["seccompProfile"] == {"type": "Unconfined"}


@pytest.mark.parametrize("case", ["deployment", "statefulset"])
def test_buildkitd_serves_mtls_only_from_the_server_secret(case: str) -> None:
    spec = pod_spec(CASES[case])
    (container,) = spec["containers"]
    args = container["args"]
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert flags["--addr"] == "tcp://0.0.0.0:1234"
    assert "--oci-worker-no-process-sandbox" in args
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    for flag, key in (("--tlscacert", "ca.crt"), ("--tlscert", "tls.crt"), ("--tlskey", "tls.key")):
        assert args[args.index(flag) + 1] == f"{mount['mountPath']}/{key}"
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == SECRETS["server-secret"]["metadata"]["name"]
    annotations = CASES[case]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[naming.ANNOTATION_TLS] == SERVER.fingerprint
    renewed = render_daemon(pool(), SETTINGS, KeyPair(b"renewed", b"key"))
    assert renewed["metadata"]["annotations"] != CASES["deployment"]["metadata"]["annotations"]


def test_the_service_reaches_the_daemons_port() -> None:
    service = CASES["service"]
    (port,) = service["spec"]["ports"]
    (container,) = pod_spec(CASES["deployment"])["containers"]
    (daemon_port,) = container["ports"]
    assert port["targetPort"] == daemon_port["name"]
    assert service["spec"]["selector"] == CASES["deployment"]["spec"]["selector"]["matchLabels"]
    assert endpoint(pool()) == f"tcp://{service['metadata']['name']}.shop.svc:{port['port']}"
    assert f"{service['metadata']['name']}.shop.svc" in server_names(pool())


def decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def test_the_daemons_secret_never_holds_the_ca_key() -> None:
    secret = SECRETS["server-secret"]
    assert secret["type"] == "kubernetes.io/tls"
    assert decoded(secret) == {"ca.crt": CA.cert_pem, "tls.crt": SERVER.cert_pem, "tls.key": SERVER.key_pem}
    assert secret["metadata"]["namespace"] == "shop"


def test_the_operators_secret_is_in_its_namespace() -> None:
    secret = SECRETS["ca-secret"]
    assert secret["metadata"]["namespace"] == "servicebuild-system"
    assert "ownerReferences" not in secret["metadata"]
    assert decoded(secret) == {
        "ca.crt": CA.cert_pem,
        "ca.key": CA.key_pem,
        "tls.crt": CLIENT.cert_pem,
        "tls.key": CLIENT.key_pem,
    }


@pytest.mark.parametrize("name", ["builders", "team.builders", "9-builders", "b" * 253])
def test_every_pool_name_makes_a_service_name(name: str) -> None:
    service = naming.pool_daemon_name(name)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service)
    assert len(service) <= 63
    assert naming.pool_daemon_name(name) == service
