"""A Kubernetes API for the operator: KMock's emulator, seeded the way a real API server would be.

KMock 0.8 assigns no uid, resourceVersion or generation, ignores label selectors and applies every
update whatever version it names: the helpers here add what the real API server would, so the operator
code needs no special cases.
"""

import asyncio
import base64
import functools
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from servicebuild.api.models import GROUP, PLURAL, VERSION
from servicebuild.api.pool import POOL_PLURAL

CRD_YAMLS = [
    Path(__file__).resolve().parents[2] / "crds" / f"{plural}.{GROUP}.yaml"
    for plural in (PLURAL, POOL_PLURAL)
]

SERVICEBUILDS = kmock.resource(GROUP, VERSION, PLURAL)
BUILDERPOOLS = kmock.resource(GROUP, VERSION, POOL_PLURAL)
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
STATEFULSETS = kmock.resource("apps", "v1", "statefulsets")
SERVICES = kmock.resource("", "v1", "services")
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
SECRETS = kmock.resource("", "v1", "secrets")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
EVENTS = kmock.resource("", "v1", "events")
NAMESPACES = kmock.resource("", "v1", "namespaces")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
_RESOURCES = {
    SERVICEBUILDS: kmock.ResourceInfo(
        kind="ServiceBuild", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    BUILDERPOOLS: kmock.ResourceInfo(
        kind="BuilderPool", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    DEPLOYMENTS: kmock.ResourceInfo(
        kind="Deployment", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    STATEFULSETS: kmock.ResourceInfo(
        kind="StatefulSet", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    SERVICES: kmock.ResourceInfo(kind="Service", namespaced=True, verbs=_VERBS),
    JOBS: kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"}, verbs=_VERBS),
    PODS: kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}, verbs=_VERBS),
    SECRETS: kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=_VERBS),
    CONFIGMAPS: kmock.ResourceInfo(kind="ConfigMap", namespaced=True, verbs=_VERBS),
    EVENTS: kmock.ResourceInfo(kind="Event", namespaced=True, verbs=_VERBS),
    # Kopf starts no watch before it has discovered namespaces, even cluster-wide where it lists none.
    NAMESPACES: kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=_VERBS),
    LEASES: kmock.ResourceInfo(kind="Lease", namespaced=True, verbs=_VERBS),
    CRDS: kmock.ResourceInfo(kind="CustomResourceDefinition", namespaced=False, verbs=_VERBS),
}
_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def _matches(labels: Mapping[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    return all(
        labels.get(key) == value for key, _, value in (term.partition("=") for term in selector.split(","))
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conflict(resource: kmock.resource, name: str) -> aiohttp.web.Response:
    """The API server's answer to an update naming a resourceVersion that is no longer the object's."""
    message = (
        f'Operation cannot be fulfilled on {resource.plural}.{resource.group} "{name}": the object has been'
        " modified; please apply your changes to the latest version and try again"
    )
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return aiohttp.web.json_response({**status, "reason": "Conflict", "code": 409}, status=409)


@attrs.define
class PodLog:
    """A container's log as the kubelet serves it: what was written so far, and whether it has ended."""

    text: str = ""
    ended: bool = False
    changed: asyncio.Condition = attrs.field(factory=asyncio.Condition)

    def has_more(self, sent: int) -> bool:
        return self.ended or len(self.text) > sent

    async def write(self, text: str, *, end: bool = False) -> None:
        async with self.changed:
            self.text += text
            self.ended = self.ended or end
            self.changed.notify_all()


def _tail(text: str, lines: str | None) -> str:
    if lines is None:
        return text
    kept = text.splitlines(keepends=True)
    return "".join(kept[len(kept) - int(lines) :]) if int(lines) < len(kept) else text


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """KMock's emulator with the bookkeeping a real API server does on every write: a uid and a
    creationTimestamp for a new object, a new resourceVersion for each write, and optimistic concurrency:
    an update naming a `metadata.resourceVersion` that is not the object's is refused with 409 Conflict.
    KMock 0.8 does none of these. Kopf needs the versions: it skips the events older than its own patch
    by their version, and without them handles a new object once per event queued before its first
    patch. Leader election needs the conflicts: of two replicas taking a Lease at once, one must lose.

    Writes are served one at a time, so that no other write lands between an update's version check and
    the update itself."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _writing: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    unreachable: Callable[[kmock.Request], bool] = attrs.field(default=lambda _: False, init=False)
    """Requests that never reach this server (a network partition): answered 503, with no effect."""
    pod_logs: dict[tuple[str, str], PodLog] = attrs.field(factory=dict, init=False)
    """(namespace, Pod) → its build container's log, which KMock does not serve: `GET …/pods/NAME/log`."""

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.unreachable(request):
            return aiohttp.web.json_response({"kind": "Status", "code": 503}, status=503)
        if request.resource == PODS and request.subresource == "log":
            return await self._serve_log(request)
        if request.method == kmock.method.PUT and request.name and isinstance(request.data, dict):
            return await self._replace(request)
        creates = request.action == kmock.action.CREATE
        writes = creates or (request.action == kmock.action.UPDATE and request.name)
        if not (writes and request.resource is not None and isinstance(request.data, dict)):
            return await super()._handle(request)
        async with self._writing:
            metadata = request.data.setdefault("metadata", {})
            if not creates and metadata.get("resourceVersion") not in (None, self._stored_version(request)):
                return _conflict(request.resource, str(request.name))
            metadata["resourceVersion"] = str(next(self._versions))
            if creates:
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("creationTimestamp", _now())
            return await super()._handle(request)

    async def _replace(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """PUT, which KMock 0.8 does not serve: the object replaced but its status (a status subresource's
        own), its uid and creationTimestamp kept, `metadata.generation` counted up when the spec changed."""
        key = (request.resource, request.namespace, request.name)
        async with self._writing:
            stored = self._stored_version(request)
            if stored is None:
                return aiohttp.web.json_response({"kind": "Status", "code": 404}, status=404)
            body = dict(request.data)
            if body.get("metadata", {}).get("resourceVersion") not in (None, stored):
                return _conflict(request.resource, str(request.name))
            old = dict(self.objects[key].raw)
            old_meta = old.get("metadata") or {}
            generation = int(old_meta.get("generation") or 1)
            if body.get("spec") != old.get("spec"):
                generation += 1
            body["metadata"] = {
                **body.get("metadata", {}),
                "uid": old_meta.get("uid"),
                "creationTimestamp": old_meta.get("creationTimestamp"),
                "generation": generation,
                "resourceVersion": str(next(self._versions)),
            }
            if "status" in old:
                body["status"] = old["status"]
            self.objects[key].create(body)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": body})
        return aiohttp.web.json_response(body)

    async def _serve_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """As the kubelet serves it through the API server: 404 for a Pod that is gone, 400 for a container
        not started; `tailLines`; with `follow=true` the log streamed as it is written, until it ends."""
        if self._stored_version(request) is None:
            return aiohttp.web.json_response({"kind": "Status", "code": 404}, status=404)
        log = self.pod_logs.get((str(request.namespace), str(request.name)))
        if log is None:
            return aiohttp.web.json_response({"kind": "Status", "code": 400}, status=400)
        if request.params.get("follow") != "true":
            return aiohttp.web.Response(text=_tail(log.text, request.params.get("tailLines")))
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request._raw_request)
        sent = 0
        while True:
            async with log.changed:
                await log.changed.wait_for(functools.partial(log.has_more, sent))
                chunk, ended = log.text[sent:], log.ended
            sent += len(chunk)
            await response.write(chunk.encode())
            if ended:
                await response.write_eof()
                return response

    def _stored_version(self, request: kmock.Request) -> str | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        stored = self.objects[key]
        return str(stored.raw.get("metadata", {}).get("resourceVersion"))

    def version(self) -> str:
        """A new resourceVersion, for a LIST served by hand."""
        return str(next(self._versions))


class Cluster:
    """The emulated API plus the label selectors a real API server understands."""

    def __init__(self, emulator: ApiServer) -> None:
        self.kmock = emulator
        for resource, info in _RESOURCES.items():
            emulator.resources[resource] = info
        for resource in (JOBS, PODS):
            emulator[kmock.action.LIST, resource] << self._list_with_selector
        # Installed with the operator, as on a real cluster: its event tells the operator it is ready.
        for path in CRD_YAMLS:
            crd = yaml.safe_load(path.read_text())
            emulator.objects[CRDS, None, crd["metadata"]["name"]] = crd

    def _list_with_selector(self, request: kmock.Request) -> dict[str, Any]:
        selector = request.params.get("labelSelector")
        items = [
            obj.raw
            for (resource, namespace, _), obj in self.kmock.objects.items()
            if resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and not obj.deleted
            and _matches(obj.raw.get("metadata", {}).get("labels") or {}, selector)
        ]
        return {"metadata": {"resourceVersion": self.kmock.version()}, "items": items}

    def _path(self, resource: kmock.resource, namespace: str, name: str | None = None) -> str:
        base = (
            f"/api/{resource.version}"
            if resource.group == ""
            else f"/apis/{resource.group}/{resource.version}"
        )
        path = f"{base}/namespaces/{namespace}/{resource.plural}"
        return f"{path}/{name}" if name else path

    async def create(self, resource: kmock.resource, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.kmock.post(self._path(resource, body["metadata"]["namespace"]), json=body)
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result

    async def patch(
        self,
        resource: kmock.resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> None:
        path = self._path(resource, namespace, name) + ("/status" if status else "")
        response = await self.kmock.patch(path, json=patch, headers=_MERGE_PATCH)
        response.raise_for_status()

    async def delete(self, resource: kmock.resource, namespace: str, name: str) -> None:
        response = await self.kmock.delete(self._path(resource, namespace, name))
        response.raise_for_status()

    def get(self, resource: kmock.resource, namespace: str, name: str) -> dict[str, Any] | None:
        for (res, ns, obj_name), obj in self.kmock.objects.items():
            if (res, ns, obj_name) == (resource, namespace, name) and not obj.deleted:
                return dict(obj.raw)
        return None

    def all(self, resource: kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(obj.raw)
            for (res, ns, _), obj in self.kmock.objects.items()
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted
        ]

    def requests(self, action: kmock.action, resource: kmock.resource) -> list[kmock.Request]:
        """The requests the emulator has answered so far for this action on this resource."""
        return [
            request for request in self.kmock if request.action == action and request.resource == resource
        ]

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.all(EVENTS, namespace)
            if event.get("involvedObject", {}).get("name") == name
        ]

    async def create_servicebuild(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServiceBuild",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": spec,
        }
        return await self.create(SERVICEBUILDS, body)

    async def create_configmap(
        self, namespace: str, name: str, data: dict[str, str], binary_data: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
        }
        body["data"] = data
        if binary_data:
            body["binaryData"] = binary_data
        return await self.create(CONFIGMAPS, body)

    async def create_secret(
        self,
        namespace: str,
        name: str,
        data: dict[str, bytes],
        secret_type: str = "Opaque",  # noqa: S107 - a Secret type, not a password
    ) -> None:
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret_type,
            "metadata": {"name": name, "namespace": namespace},
        }
        await self.create(SECRETS, {**body, "data": encoded})

    async def change_spec(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> int:
        """Patch the spec and bump the generation, as the API server does for a spec change."""
        current = self.get(SERVICEBUILDS, namespace, name)
        assert current is not None
        generation = int(current["metadata"].get("generation", 1)) + 1
        await self.patch(
            SERVICEBUILDS, namespace, name, {"metadata": {"generation": generation}, "spec": spec_patch}
        )
        return generation

    async def patch_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> None:
        """Patch a ServiceBuild's metadata (annotations, labels): no new generation, as for the API server."""
        await self.patch(SERVICEBUILDS, namespace, name, {"metadata": metadata})

    def servicebuild(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.get(SERVICEBUILDS, namespace, name)
        assert body is not None, f"ServiceBuild {namespace}/{name} is gone"
        return body


async def eventually(check: Callable[[], Any], *, within: float = 60.0, interval: float = 0.05) -> Any:
    """Poll until `check()` returns something truthy; fail with the last value otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(interval)


def condition(body: Mapping[str, Any], condition_type: str) -> dict[str, Any] | None:
    for item in body.get("status", {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return dict(item)
    return None
