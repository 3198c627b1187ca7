"""Reconciling a BuilderPool: its mTLS material, its daemon and Service, its status. Gateways passed in.

observe → decide → act → write, as for builds: the pool is read afresh; the certificates are made or renewed
when `pki.renewal_due` says so (the CA and the operator's client certificate in the operator's own
namespace, the daemon's server certificate in the pool's); each rendered object is written only when its
rendering changed; the status follows the daemon's availability and is written only when it changed.
"""

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from servicebuild import naming, pki, pool_status
from servicebuild.api.pool import (
    BuilderPool,
    InvalidBuilderPool,
    parse_builderpool,
    pool_status_to_dict,
)
from servicebuild.config import Settings
from servicebuild.render import pool as render
from servicebuild.render.pool import CA_CERT_KEY, CA_KEY_KEY, TLS_CERT_KEY, TLS_KEY_KEY
from servicebuild.status import merge_patch

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class PoolActivity(Protocol):
    """The builds this operator runs on pools (`poolruns.PoolRuns`)."""

    def running(self, pool: Key) -> int: ...
    def last_activity(self, pool: Key) -> datetime: ...


class PoolGateway(Protocol):
    """What reconciling a pool needs of the Kubernetes API (`kube.Kube` in the operator)."""

    def get_builderpool(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def patch_builderpool_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def write_pool_secret(self, body: dict[str, Any], *, exists: bool) -> None: ...
    def get_own_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def write_own_secret(self, body: dict[str, Any], *, exists: bool) -> None: ...
    def delete_own_secret(self, namespace: str, name: str) -> None: ...
    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def write_deployment(self, body: dict[str, Any], *, exists: bool) -> dict[str, Any]: ...
    def delete_deployment(self, namespace: str, name: str) -> None: ...
    def get_statefulset(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def write_statefulset(self, body: dict[str, Any], *, exists: bool) -> dict[str, Any]: ...
    def delete_statefulset(self, namespace: str, name: str) -> None: ...
    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def write_service(self, body: dict[str, Any], *, exists: bool) -> None: ...


def _unchanged(live: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether the live object carries the hash of this very rendering."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return bool(
        annotations.get(naming.ANNOTATION_SPEC_HASH)
        == desired["metadata"]["annotations"][naming.ANNOTATION_SPEC_HASH]
    )


class PoolReconciler:
    """Brings each BuilderPool's objects and status to what its spec asks for."""

    def __init__(
        self, kube: PoolGateway, settings: Settings, own_namespace: str, activity: PoolActivity
    ) -> None:
        self.kube = kube
        self.activity = activity
        self.settings = settings
        self.own_namespace = own_namespace
        """Where the pools' CAs and the operator's client certificates live (the operator's namespace)."""

    def reconcile(self, key: Key, now: datetime) -> None:
        """Reconcile the pool as it is now; a pool that is gone takes its CA Secret with it."""
        body = self.kube.get_builderpool(*key)
        if body is None:
            self.kube.delete_own_secret(self.own_namespace, naming.pool_ca_secret_name(*key))
            return
        pool = parse_builderpool(body)
        if isinstance(pool, InvalidBuilderPool):
            self._write(pool, now, pool.problem)
            return
        problem = self._image_problem(pool)
        if problem is not None:
            self._write(pool, now, problem)
            return
        server = self._server_material(pool, self._operator_material(pool, now), now)
        running = self.activity.running(key)
        replicas = pool_status.daemon_replicas(
            pool.spec.idle_timeout_seconds, running, self.activity.last_activity(key), now
        )
        workload = self._apply_daemon(pool, server, replicas)
        self._apply_service(pool)
        daemon = pool_status.observe_daemon(workload, replicas)
        self._write(pool, now, replace(daemon, endpoint=render.endpoint(pool), builds_running=running))

    def _image_problem(self, pool: BuilderPool) -> str | None:
        """Another BuildKit image only from SERVICEBUILD_ALLOWED_BUILDER_IMAGES, as for builds."""
        image = pool.spec.builder_image
        if image is None or image in self.settings.allowed_builder_images:
            return None
        return (
            f"spec.builderImage: {image!r} is not an image the operator allows"
            " (SERVICEBUILD_ALLOWED_BUILDER_IMAGES)."
        )

    def _operator_material(self, pool: BuilderPool, now: datetime) -> pki.KeyPair:
        """The pool's CA; it and the operator's client certificate made or renewed as due, and kept in the
        operator's namespace (where the builds sent to the pool will read the client certificate)."""
        meta = pool.metadata
        name = naming.pool_ca_secret_name(meta.namespace, meta.name)
        data = self.kube.get_own_secret_data(self.own_namespace, name)
        ca = render.read_pair(data or {}, CA_CERT_KEY, CA_KEY_KEY)
        client = render.read_pair(data or {}, TLS_CERT_KEY, TLS_KEY_KEY)
        renew_ca = ca is None or pki.renewal_due(ca, now)
        if renew_ca or ca is None:
            ca = pki.new_ca(f"builderpool {meta.namespace}/{meta.name}", now)
        if renew_ca or client is None or pki.renewal_due(client, now, issuer=ca):
            client = pki.issue(ca, f"{naming.MANAGED_BY} for {meta.namespace}/{meta.name}", now)
            secret = render.render_ca_secret(pool, self.own_namespace, ca, client)
            self.kube.write_own_secret(secret, exists=data is not None)
            logger.info("Builder pool %s/%s: certificates renewed in %s", *meta.key, self.own_namespace)
        return ca

    def _server_material(self, pool: BuilderPool, ca: pki.KeyPair, now: datetime) -> pki.KeyPair:
        """The daemon's server certificate for the Service's names, made or renewed as due (a new CA too)."""
        meta = pool.metadata
        name = naming.pool_daemon_name(meta.name)
        data = self.kube.get_secret_data(meta.namespace, name)
        server = render.read_pair(data or {}, TLS_CERT_KEY, TLS_KEY_KEY)
        names = render.server_names(pool)
        if server is None or pki.renewal_due(server, now, issuer=ca, server_names=names):
            server = pki.issue(ca, names[2], now, server_names=names)
            self.kube.write_pool_secret(
                render.render_server_secret(pool, ca, server), exists=data is not None
            )
        return server

    def _apply_daemon(self, pool: BuilderPool, server: pki.KeyPair, replicas: int) -> dict[str, Any] | None:
        """The daemon's workload as stored after any write; the one of the other kind is deleted (the
        storage changed between an emptyDir and a claim)."""
        meta = pool.metadata
        desired = render.render_daemon(pool, self.settings, server, replicas=replicas)
        name = desired["metadata"]["name"]
        if desired["kind"] == "Deployment":
            if self.kube.get_statefulset(meta.namespace, name) is not None:
                self.kube.delete_statefulset(meta.namespace, name)
            live = self.kube.get_deployment(meta.namespace, name)
            write = self.kube.write_deployment
        else:
            if self.kube.get_deployment(meta.namespace, name) is not None:
                self.kube.delete_deployment(meta.namespace, name)
            live = self.kube.get_statefulset(meta.namespace, name)
            write = self.kube.write_statefulset
        if _unchanged(live, desired):
            return live
        return write(desired, exists=live is not None)

    def _apply_service(self, pool: BuilderPool) -> None:
        desired = render.render_service(pool)
        live = self.kube.get_service(pool.metadata.namespace, desired["metadata"]["name"])
        if not _unchanged(live, desired):
            self.kube.write_service(desired, exists=live is not None)

    def _write(
        self,
        pool: BuilderPool | InvalidBuilderPool,
        now: datetime,
        observed: pool_status.Daemon | str,
    ) -> None:
        """The whole status, sent only when it differs from the stored one."""
        meta = pool.metadata
        status = pool_status.decide(pool.status, meta.generation, now, observed)
        if pool_status_to_dict(status) != pool_status_to_dict(pool.status):
            patch = merge_patch(pool_status_to_dict(pool.status), pool_status_to_dict(status))
            self.kube.patch_builderpool_status(meta.namespace, meta.name, patch)
