"""The only module that talks to the Kubernetes API (through the official client)."""

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import kubernetes
import pydantic
import urllib3
from kubernetes.client import (
    ApiClient,
    BatchV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CoreV1Event,
    CustomObjectsApi,
    V1Job,
    V1Lease,
)
from kubernetes.client.exceptions import ApiException

from servicebuild.api.models import GROUP, KIND, PLURAL, VERSION, ObjectMeta
from servicebuild.election import LeaseRecord, StoredLease, parse_lease
from servicebuild.naming import LABEL_MANAGED_BY, MANAGED_BY, uid_selector
from servicebuild.times import format_time

logger = logging.getLogger(__name__)

_TRANSIENT_STATUSES = {408, 409, 429, 500, 502, 503, 504}
_PAGE_SIZE = 500
"""Objects per page of a LIST."""
_MAX_EXPLANATION = 400
"""Characters of the API server's own explanation kept in a message (which field it rejected)."""


class KubeError(Exception):
    """A Kubernetes API call failed; `transient` says whether retrying can help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class NotLeadingError(KubeError):
    """A write that acts on builds was not sent: this replica does not lead (or no longer does). Transient:
    whoever leads (this replica again, or another) does it later; it is never a verdict on the build."""

    def __init__(self, action: str) -> None:
        super().__init__(f"{action}: not sent, this replica is not the leader", transient=True)


def _always() -> bool:
    return True


def _explanation(exc: ApiException) -> str:
    """The `message` of the Status the API server answered with, e.g. which field a 422 rejected."""
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:_MAX_EXPLANATION]}" if message else ""


def _error(action: str, exc: Exception) -> KubeError:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{action}: HTTP {status} {exc.reason}{_explanation(exc)}"
        return KubeError(message, transient=status in _TRANSIENT_STATUSES)
    return KubeError(f"{action}: {type(exc).__name__}", transient=True)


class Kube:
    """Reads and writes the objects a build involves; maps API errors to KubeError.

    `may_act` fences the writes that act on builds (status, Jobs, Events): each asks it just before it
    is sent and raises NotLeadingError when it says no, so a replica that lost its lease stops at once
    whatever its threads were doing. Reads, push records and the Lease itself are never fenced.
    """

    def __init__(
        self, api_client: ApiClient, request_timeout: float = 30.0, may_act: Callable[[], bool] = _always
    ) -> None:
        self._api_client = api_client
        self._core = CoreV1Api(api_client)
        self._batch = BatchV1Api(api_client)
        self._custom = CustomObjectsApi(api_client)
        self._coordination = CoordinationV1Api(api_client)
        self._timeout = request_timeout
        self.may_act = may_act

    def fence(self, action: str) -> None:
        """Raise NotLeadingError unless `may_act`: asked just before an acting write is sent, by this
        gateway and by the registry gateway (a tag it writes is one)."""
        if not self.may_act():
            raise NotLeadingError(action)

    @classmethod
    def from_environment(cls, request_timeout: float = 30.0) -> "Kube":
        """In-cluster configuration when running in a Pod, otherwise the current kubeconfig."""
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(ApiClient(), request_timeout)

    def close(self) -> None:
        """Close the client's connections and its thread pool."""
        self._api_client.close()  # type: ignore[no-untyped-call]

    def _call(self, action: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call returning the raw JSON document; None for 404."""
        try:
            response = call(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(action, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(action, exc) from exc
        return json.loads(response.data) if response.data else {}

    def _list(self, action: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a LIST."""
        return [item for page in self._pages(action, call, *args, **kwargs) for item in page]

    def _pages(
        self, action: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Iterator[list[dict[str, Any]]]:
        """The items of a LIST, a page at a time: thousands of objects never arrive as one document,
        which would set the operator's peak memory."""
        token = None
        while True:
            page = self._call(action, call, *args, limit=_PAGE_SIZE, _continue=token, **kwargs) or {}
            yield page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def get_servicebuild(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            f"get servicebuild {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
        return result

    def list_servicebuilds(self, namespaces: Iterable[str]) -> list[dict[str, Any]]:
        """All ServiceBuilds in the given namespaces, or in all namespaces when none are given."""
        return [item for page in self.servicebuild_pages(namespaces) for item in page]

    def servicebuild_pages(self, namespaces: Iterable[str]) -> Iterator[list[dict[str, Any]]]:
        """The ServiceBuilds of `list_servicebuilds`, a page at a time, for a caller that needs only a
        little of each."""
        scopes = sorted(namespaces)
        if not scopes:
            yield from self._pages(
                "list servicebuilds", self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        for namespace in scopes:
            yield from self._pages(
                f"list servicebuilds in {namespace}",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )

    def annotate_servicebuild(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge-patch annotations onto a ServiceBuild (a record for whichever replica reconciles it)."""
        self._call(
            f"annotate servicebuild {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
        )

    def patch_servicebuild_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; fields set to None are removed."""
        self.fence(f"patch status of servicebuild {namespace}/{name}")
        self._call(
            f"patch status of servicebuild {namespace}/{name}",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            f"get job {namespace}/{name}", self._batch.read_namespaced_job, name, namespace
        )
        return result

    def create_job(self, job: dict[str, Any]) -> bool:
        """Create the Job; False when it already exists (another reconcile or an earlier run made it)."""
        metadata = job["metadata"]
        self.fence(f"create job {metadata['namespace']}/{metadata['name']}")
        try:
            body = V1Job.model_validate(job)
        except pydantic.ValidationError as exc:
            # The client's own model refused it: the API server would too, and retrying cannot help.
            raise KubeError(
                f"create job {metadata['namespace']}/{metadata['name']}: {exc}", transient=False
            ) from exc
        try:
            self._batch.create_namespaced_job(
                metadata["namespace"],
                body,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _error(f"create job {metadata['namespace']}/{metadata['name']}", exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(f"create job {metadata['namespace']}/{metadata['name']}", exc) from exc
        return True

    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The Jobs the operator made for the ServiceBuild with this uid."""
        listing = self._call(
            f"list jobs in {namespace}",
            self._batch.list_namespaced_job,
            namespace,
            label_selector=uid_selector(uid),
        )
        return list((listing or {}).get("items", []))

    def list_build_jobs(self, namespaces: Iterable[str]) -> list[dict[str, Any]]:
        """Every build Job of the operator in the given namespaces, or in all when none are given."""
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        scopes = sorted(namespaces)
        if not scopes:
            return self._list(
                "list build jobs", self._batch.list_job_for_all_namespaces, label_selector=selector
            )
        return [
            item
            for namespace in scopes
            for item in self._list(
                f"list build jobs in {namespace}",
                self._batch.list_namespaced_job,
                namespace,
                label_selector=selector,
            )
        ]

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its Pods; a Job already gone is fine."""
        self.fence(f"delete job {namespace}/{name}")
        self._call(
            f"delete job {namespace}/{name}",
            self._batch.delete_namespaced_job,
            name,
            namespace,
            propagation_policy="Background",
        )

    def get_job_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        """The newest Pod of a Job (backoffLimit 0 makes at most one, unless one was deleted)."""
        listing = self._call(
            f"list pods of job {namespace}/{job_name}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/job-name={job_name}",
        )
        pods = list((listing or {}).get("items", []))
        pods.sort(key=lambda pod: str(pod.get("metadata", {}).get("creationTimestamp", "")))
        return pods[-1] if pods else None

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str | None:
        """The last `tail_lines` lines of a container's log; None when the Pod is gone."""
        try:
            response: Any = self._core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                tail_lines=tail_lines,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # gone, or its container's log with it
                return None
            raise _error(f"read log of pod {namespace}/{pod}", exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(f"read log of pod {namespace}/{pod}", exc) from exc
        data: bytes = response.data  # with _preload_content=False, the urllib3 response
        return data.decode(errors="replace")

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            f"get configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace
        )
        return result

    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's base64-encoded data; None when the Secret does not exist."""
        secret = self._call(
            f"get secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
        )
        if secret is None:
            return None
        return dict(secret.get("data") or {})

    def post_event(
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: datetime
    ) -> None:
        """Record an Event on a ServiceBuild, as `kubectl describe` shows it."""
        self.fence(f"post event on servicebuild {involved.namespace}/{involved.name}")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved.name}.{secrets.token_hex(8)}", "namespace": involved.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": involved.name,
                "namespace": involved.namespace,
                "uid": involved.uid,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "count": 1,
        }
        self._call(
            f"post event on servicebuild {involved.namespace}/{involved.name}",
            self._core.create_namespaced_event,
            involved.namespace,
            CoreV1Event.model_validate(event),
        )

    def read_lease(self, namespace: str, name: str) -> StoredLease | None:
        body = self._call(
            f"get lease {namespace}/{name}", self._coordination.read_namespaced_lease, name, namespace
        )
        return None if body is None else parse_lease(body)

    def write_lease(
        self, namespace: str, name: str, record: LeaseRecord, resource_version: str | None
    ) -> bool:
        """Create the Lease (`resource_version` None) or update the one read at `resource_version`; False
        when another replica wrote first (409), which a leader election must see: its updates carry the
        version they read as a precondition, as client-go's do."""
        action = f"write lease {namespace}/{name}"
        try:
            if resource_version is None:
                lease = {"metadata": {"name": name, "namespace": namespace}, "spec": record.spec()}
                self._coordination.create_namespaced_lease(
                    namespace,
                    V1Lease.model_validate(lease),
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            else:
                patch = {"metadata": {"resourceVersion": resource_version}, "spec": record.spec()}
                self._coordination.patch_namespaced_lease(
                    name,
                    namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _error(action, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(action, exc) from exc
        return True
