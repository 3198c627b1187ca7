"""The command line's gateway to the Kubernetes API: the operator's `Kube`, and the calls only a person
makes (create a ServiceBuild, write its context, follow a log), with the kubeconfig as kubectl reads
it. Apart from kube.py, the only module importing `kubernetes`: these calls run with the person's own
rights, so the operator's ClusterRole, derived from kube.py, does not grow by them."""

from collections.abc import Iterator
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from servicebuild.api.models import GROUP, PLURAL, VERSION
from servicebuild.kube import Kube, KubeError, _error


class PersonKube(Kube):
    """A person's client; the default fence (`may_act` always true): no leader election here."""

    @classmethod
    def from_kubeconfig(cls, context: str | None = None) -> tuple["PersonKube", str]:
        """A client for a person at a terminal, as kubectl makes it: the kubeconfig's current context or
        `context`, and that context's namespace (`default` when it names none)."""
        try:
            contexts, current = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
            chosen = (
                next((item for item in contexts if item["name"] == context), None) if context else current
            )
            if chosen is None:
                raise KubeError(f"kubeconfig: no context named {context!r}", transient=False)
            client = kubernetes.config.new_client_from_config(context=chosen["name"])  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException as exc:
            raise KubeError(f"kubeconfig: {exc}", transient=False) from exc
        return cls(client), str(chosen.get("context", {}).get("namespace") or "default")

    def create_servicebuild(self, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body["metadata"]
        result: dict[str, Any] = self._call(
            f"create servicebuild {metadata['namespace']}/{metadata['name']}",
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            metadata["namespace"],
            PLURAL,
            body,
        )
        return result

    def patch_servicebuild(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a ServiceBuild (its spec, labels, annotations); the object as it is afterwards."""
        result: dict[str, Any] = self._call(
            f"patch servicebuild {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
        )
        return result

    def put_configmap(self, body: dict[str, Any]) -> None:
        """Create the ConfigMap, or merge-patch the one that exists with the body's data and labels."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if self.get_configmap(namespace, name) is None:
            self._call(
                f"create configmap {namespace}/{name}",
                self._core.create_namespaced_config_map,
                namespace,
                body,
            )
            return
        self._call(
            f"patch configmap {namespace}/{name}",
            self._core.patch_namespaced_config_map,
            name,
            namespace,
            body,
        )

    def stream_pod_log(
        self, namespace: str, pod: str, container: str, *, follow: bool
    ) -> Iterator[str] | None:
        """A container's whole log line by line, with `follow` as it is written until the container ends;
        None when the Pod is gone. No request timeout: a build may print nothing for minutes."""
        try:
            response: Any = self._core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=follow, _preload_content=False
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise _error(f"read log of pod {namespace}/{pod}", exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(f"read log of pod {namespace}/{pod}", exc) from exc
        return _lines(response, f"read log of pod {namespace}/{pod}")


def _lines(response: Any, action: str) -> Iterator[str]:
    """The lines of a streamed response, each with its newline; the connection released at the end."""
    pending = b""
    try:
        for chunk in response.stream(4096, decode_content=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode(errors="replace") + "\n"
        if pending:
            yield pending.decode(errors="replace")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _error(action, exc) from exc
    finally:
        response.release_conn()
