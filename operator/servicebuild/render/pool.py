"""A builder pool's objects: its rootless buildkitd (a Deployment, or a StatefulSet when its state is on a
PersistentVolumeClaim), the Service builds reach it through, and the Secrets of its mTLS.

Pure: the same BuilderPool, Settings and certificates always render the same dicts; no I/O, no clock.
The daemon's Pod has the build Job's security: the BuildKit container's context (`BUILDKIT_SECURITY_CONTEXT`),
no service-account token, no service links.
"""

import base64
import copy
import hashlib
import json
from typing import Any

from servicebuild import naming
from servicebuild.api.models import GROUP, VERSION
from servicebuild.api.pool import POOL_KIND, BuilderPool
from servicebuild.config import Settings
from servicebuild.pki import KeyPair
from servicebuild.render.job import (
    BUILDKIT_SECURITY_CONTEXT,
    BUILDKITD_DIR,
    BUILDKITD_VOLUME,
    buildkit_resources,
)

DAEMON_CONTAINER = "buildkitd"
DAEMON_PORT = 1234
PORT_NAME = "buildkitd"
TLS_VOLUME = "tls"
TLS_DIR = "/etc/buildkit/tls"
CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
"""The keys of a `kubernetes.io/tls` Secret (and `ca.crt`): the names `buildctl --tlsdir` reads too."""


def server_names(pool: BuilderPool) -> tuple[str, ...]:
    """The DNS names builds reach the daemon by: its Service's, short to fully qualified."""
    service, namespace = naming.pool_daemon_name(pool.metadata.name), pool.metadata.namespace
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def endpoint(pool: BuilderPool) -> str:
    """`tcp://<service>.<namespace>.svc:1234`, what `buildctl --addr` takes."""
    return f"tcp://{server_names(pool)[2]}:{DAEMON_PORT}"


def _labels(pool: BuilderPool) -> dict[str, str]:
    return {naming.LABEL_MANAGED_BY: naming.MANAGED_BY, naming.LABEL_BUILDERPOOL: pool.metadata.name}


def _metadata(pool: BuilderPool, name: str) -> dict[str, Any]:
    """Labelled as the pool's and owned by it: Kubernetes deletes them with the BuilderPool."""
    meta = pool.metadata
    return {
        "name": name,
        "namespace": meta.namespace,
        "labels": _labels(pool),
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": POOL_KIND,
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            },
        ],
    }


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` annotated with the hash of its rendering: what the operator compares, never the live object,
    which the API server fills with defaults."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    annotated = copy.deepcopy(obj)
    annotated["metadata"].setdefault("annotations", {})[naming.ANNOTATION_SPEC_HASH] = digest
    return annotated


def _daemon_container(pool: BuilderPool, settings: Settings) -> dict[str, Any]:
    return {
        "name": DAEMON_CONTAINER,
        "image": pool.spec.builder_image or settings.buildkit_image,
        "imagePullPolicy": "IfNotPresent",
        # The rootless image's entrypoint is `rootlesskit buildkitd`: these are buildkitd's flags. The CA
        # verifies clients: only the operator, holding a client certificate of it, can submit builds.
        "args": [
            "--addr",
            f"tcp://0.0.0.0:{DAEMON_PORT}",
            "--oci-worker-no-process-sandbox",
            "--tlscacert",
            f"{TLS_DIR}/{CA_CERT_KEY}",
            "--tlscert",
            f"{TLS_DIR}/{TLS_CERT_KEY}",
            "--tlskey",
            f"{TLS_DIR}/{TLS_KEY_KEY}",
        ],
        "ports": [{"name": PORT_NAME, "containerPort": DAEMON_PORT, "protocol": "TCP"}],
        # Listening is all a probe can see without a client certificate; the operator's first build is
        # the real check.
        "readinessProbe": {"tcpSocket": {"port": PORT_NAME}, "periodSeconds": 2},
        "resources": buildkit_resources(pool.spec.resources),
        "securityContext": copy.deepcopy(BUILDKIT_SECURITY_CONTEXT),
        "volumeMounts": [
            {"name": BUILDKITD_VOLUME, "mountPath": BUILDKITD_DIR},
            {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True},
        ],
    }


def _pod_template(pool: BuilderPool, settings: Settings, server: KeyPair) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        # The file modes stay the kubelet's default: with no process sandbox a RUN step shares the daemon's
        # user and could read its key whatever the mode; the key is worth no more than this pool's builds.
        {"name": TLS_VOLUME, "secret": {"secretName": naming.pool_daemon_name(pool.metadata.name)}},
    ]
    empty_dir = pool.spec.storage.empty_dir
    if empty_dir is not None:
        volumes.insert(0, {"name": BUILDKITD_VOLUME, "emptyDir": {"sizeLimit": empty_dir.size_limit}})
    return {
        "metadata": {"labels": _labels(pool), "annotations": {naming.ANNOTATION_TLS: server.fingerprint}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [_daemon_container(pool, settings)],
            "volumes": volumes,
        },
    }


def render_daemon(
    pool: BuilderPool, settings: Settings, server: KeyPair, *, replicas: int = 1
) -> dict[str, Any]:
    """The daemon's workload: a Deployment over an emptyDir, or a StatefulSet keeping a claim per daemon.

    One replica: a daemon's cache is its own, and a second would share no layer with the first; none while
    the pool is idle (`idleTimeout`). A Deployment replaces its Pod with `Recreate`, so two daemons never run
    at once.
    """
    name = naming.pool_daemon_name(pool.metadata.name)
    selector = {"matchLabels": _labels(pool)}
    template = _pod_template(pool, settings, server)
    claim = pool.spec.storage.persistent_volume_claim
    if claim is None:
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": selector,
            "strategy": {"type": "Recreate"},
            "template": template,
        }
        return with_spec_hash(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(pool, name), "spec": spec}
        )
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": claim.size}},
    }
    if claim.storage_class_name is not None:
        claim_spec["storageClassName"] = claim.storage_class_name
    spec = {
        "replicas": replicas,
        "serviceName": name,
        "selector": selector,
        "template": template,
        "volumeClaimTemplates": [{"metadata": {"name": BUILDKITD_VOLUME}, "spec": claim_spec}],
    }
    return with_spec_hash(
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _metadata(pool, name), "spec": spec}
    )


def render_service(pool: BuilderPool) -> dict[str, Any]:
    """The Service the daemon's certificate names; builds reach the daemon through it."""
    name = naming.pool_daemon_name(pool.metadata.name)
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(pool, name),
            "spec": {
                "selector": _labels(pool),
                "ports": [
                    {"name": PORT_NAME, "port": DAEMON_PORT, "targetPort": PORT_NAME, "protocol": "TCP"},
                ],
            },
        }
    )


def _data(**files: bytes) -> dict[str, str]:
    return {key.replace("_", "."): base64.b64encode(value).decode() for key, value in files.items()}


def render_server_secret(pool: BuilderPool, ca: KeyPair, server: KeyPair) -> dict[str, Any]:
    """The daemon's certificate and key, and the CA's certificate (never its key), in the pool's namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": _metadata(pool, naming.pool_daemon_name(pool.metadata.name)),
        "data": _data(ca_crt=ca.cert_pem, tls_crt=server.cert_pem, tls_key=server.key_pem),
    }


def render_ca_secret(pool: BuilderPool, namespace: str, ca: KeyPair, client: KeyPair) -> dict[str, Any]:
    """The pool's CA and the operator's client certificate, in the operator's own `namespace`: the tenant
    never sees them. No owner reference (none may cross namespaces): labelled with the pool instead."""
    meta = pool.metadata
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": naming.pool_ca_secret_name(meta.namespace, meta.name),
            "namespace": namespace,
            "labels": {**_labels(pool), naming.LABEL_BUILDERPOOL_NAMESPACE: meta.namespace},
        },
        "data": _data(ca_crt=ca.cert_pem, ca_key=ca.key_pem, tls_crt=client.cert_pem, tls_key=client.key_pem),
    }


def read_pair(data: dict[str, str], cert_key: str, key_key: str) -> KeyPair | None:
    """A certificate and key from a Secret's base64 data; None when either is missing."""
    if cert_key not in data or key_key not in data:
        return None
    try:
        return KeyPair(base64.b64decode(data[cert_key]), base64.b64decode(data[key_key]))
    except ValueError:
        return None
