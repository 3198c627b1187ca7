"""The operator's RBAC, derived from the code: deploy/base/rbac.yaml grants exactly what the operator uses,
cluster-wide or, in the namespaced install, in each watched namespace; and the tenants' roles.

We test these aspects:
- the permissions are derived from the code, never listed by hand:
  - every Kubernetes API method kube.py refers to (found by parsing it; it is the only module importing
    `kubernetes`), turned into (apiGroup, resource, verb) through the request the kubernetes client itself
    builds for that method; a custom object's group and plural are the arguments kube.py passes
    (`GROUP` and `PLURAL` of servicebuild.api.models);
  - list and watch of every resource a Kopf handler of handlers.py is registered for, read from Kopf's
    registry;
  - what Kopf itself does with the settings and arguments `python -m servicebuild` passes to `kopf.run`, in
    both watching modes (all namespaces; SERVICEBUILD_NAMESPACES, as in the production overlay): patch of
    the objects it keeps progress on (and of their status if its storage writes there), Events if it posts
    them, list and watch of CRDs (and of namespaces when it serves named namespaces) while its cluster
    scanning is on, its peering objects unless it runs standalone;
  - update of `<owner>/finalizers` for each owner reference with blockOwnerDeletion in the rendered build Job;
  - where each request is made: within a watched namespace (its path names one), or cluster-wide
    (cluster-scoped objects, Kopf's watches when it serves all namespaces, and kube.py's listings of every
    namespace, which a recording client shows it makes only when the operator passes it no namespaces);
- the ClusterRole grants exactly that: nothing missing, nothing extra, nothing twice; a failure lists each
  difference and, for a missing one, the code that needs it;
- no wildcard, no resourceNames or nonResourceURLs, Secrets only read by name (never listed or watched);
- every rule has a comment right above it saying why;
- every kustomization in deploy/ renders the same roles as the base (an overlay cannot widen them), and
  so does the base with each optional component;
- following the bindings to the operator's ServiceAccount: the cluster-wide install grants every need
  cluster-wide; the namespaced install (deploy/overlays/production-namespaced) grants cluster-wide exactly
  the needs no namespace confines and, in each namespace SERVICEBUILD_NAMESPACES names, exactly the others;
- the tenants' roles, through Kubernetes' own aggregation chain: view reads ServiceBuilds, BuilderPools and
  their status, edit and admin also write ServiceBuilds, admin BuilderPools, and none writes a status;
- the mapping from a client method to a permission, as a table (the client's naming convention: read → get,
  list → list or watch, create, patch, replace → update, delete, delete_collection → deletecollection).
"""

import ast
import inspect
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import kopf
import pytest
import yaml
from kopf._cogs.structs import references as kopf_references
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    BatchV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)

import servicebuild.__main__ as entry_point
from servicebuild import kube
from servicebuild.api.models import GROUP, KIND, PLURAL, VERSION, ServiceBuild
from servicebuild.api.pool import POOL_KIND, POOL_PLURAL, BuilderPool
from servicebuild.config import Settings
from servicebuild.pki import issue, new_ca
from servicebuild.render.job import BuildInputs, render_job
from servicebuild.render.pool import render_daemon, render_server_secret, render_service
from support import kustomizations

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "servicebuild"
KUBE_PY = PACKAGE / "kube.py"
RBAC_YAML = ROOT / "deploy" / "base" / "rbac.yaml"
TENANT_ROLES_YAML = ROOT / "deploy" / "base" / "tenant-roles.yaml"
KUBERNETES_ROLES_YAML = Path(__file__).parent / "kubernetes_roles" / "user-facing-roles.yaml"
KUSTOMIZATIONS = kustomizations.kustomizations()
BASE = ROOT / "deploy" / "base"
NAMESPACED_INSTALL = ROOT / "deploy" / "overlays" / "production-namespaced"
OPERATOR_ACCOUNT = ("ServiceAccount", "servicebuild-operator", "servicebuild-system")

Permission = tuple[str, str, str]
"""(apiGroup, resource or resource/subresource, verb), as one RBAC rule grants it; "" is the core group."""
Needs = dict[Permission, list[str]]
"""Each needed permission and why: the code that needs it."""

WATCHING_MODES: dict[str, dict[str, str]] = {
    "all namespaces": {},
    "SERVICEBUILD_NAMESPACES": {"SERVICEBUILD_NAMESPACES": "team-shop,team-payments"},
}
"""The environments `python -m servicebuild` is derived in: one ClusterRole serves both (every overlay
uses the base's; the production overlay watches named namespaces)."""


@dataclass(frozen=True)
class ScopedNeeds:
    """Where the operator makes the requests a permission is needed for (one permission may be needed in
    more than one place: Secrets are read in the watched namespaces and in the operator's own)."""

    cluster: Needs = dataclass_field(default_factory=dict)
    """Requests no namespace confines: of cluster-scoped objects, or of every namespace at once."""
    namespaced: Needs = dataclass_field(default_factory=dict)
    """Requests within a watched namespace, which a RoleBinding there grants."""
    own: Needs = dataclass_field(default_factory=dict)
    """Requests within the operator's own namespace (SERVICEBUILD_LEASE_NAMESPACE, which the Deployment sets
    to its own namespace): its Lease, the builder pools' CAs."""


OWN_NAMESPACE_FUNCTIONS = {
    "read_lease",
    "write_lease",
    "get_own_secret_data",
    "write_own_secret",
    "delete_own_secret",
}
"""The Kube methods that request in the operator's own namespace: the leader election's Lease, the builder
pools' CAs."""


def need(needs: Needs, group: str, resource: str, verbs: Iterable[str], why: str) -> None:
    for verb in verbs:
        reasons = needs.setdefault((group, resource, verb), [])
        if why not in reasons:
            reasons.append(why)


# The kubernetes client: which request a method sends, and the permission that request needs


class _RequestBuilt(Exception):  # noqa: N818 - a signal carrying the request, not an error
    def __init__(self, method: str, path: str) -> None:
        super().__init__(method, path)
        self.method = method
        self.path = path


class _RequestRecorder(ApiClient):
    """An ApiClient that stops every request right after the client built its method and path template."""

    def param_serialize(self, method: str, resource_path: str, **_: Any) -> Any:
        raise _RequestBuilt(method, resource_path)


def client_request(api: type, method: str) -> tuple[str, str]:
    """The HTTP method and path template, e.g. `/apis/batch/v1/namespaces/{namespace}/jobs/{name}`, that
    the client's `api.method` sends; taken from the client's own request builder, not from its name."""
    build = getattr(api(_RequestRecorder()), f"_{method}_serialize")
    with pytest.raises(_RequestBuilt) as built:
        build(**dict.fromkeys(inspect.signature(build).parameters))
    return built.value.method, built.value.path


def request_permission(api: type, method: str, arguments: Mapping[str, object]) -> Permission:
    """The permission `api.method(**arguments)` needs; `{group}` and `{plural}` come from the arguments."""
    http_method, path = client_request(api, method)

    def fill(segment: str) -> str:
        if not segment.startswith("{"):
            return segment
        value = arguments.get(segment.strip("{}"))
        assert isinstance(value, str), f"{api.__name__}.{method}: cannot resolve {segment} of {path}"
        return value

    segments = path.strip("/").split("/")
    if segments[:2] == ["api", "v1"]:
        group, rest = "", segments[2:]
    elif segments[0] == "apis":
        group, rest = fill(segments[1]), segments[3:]
    else:
        pytest.fail(f"{api.__name__}.{method}: {path} is not a resource path")
    if rest[:2] == ["namespaces", "{namespace}"]:
        rest = rest[2:]
    resource, *after = rest
    named = after[:1] == ["{name}"]
    subresources = after[1:] if named else after
    assert len(subresources) <= 1, f"{api.__name__}.{method}: unexpected path {path}"
    verbs = {
        ("GET", True): "get",
        ("GET", False): "watch" if arguments.get("watch") is True else "list",
        ("POST", False): "create",
        ("PUT", True): "update",
        ("PATCH", True): "patch",
        ("DELETE", True): "delete",
        ("DELETE", False): "deletecollection",
    }
    verb = verbs.get((http_method, named))
    assert verb is not None, f"{api.__name__}.{method}: no verb for {http_method} {path}"
    return group, "/".join([fill(resource), *subresources]), verb


# kube.py: every client method it refers to, with the arguments it passes


@dataclass(frozen=True)
class ApiCall:
    function: str
    """The Kube method that makes the call."""
    api: type
    method: str
    arguments: dict[str, object]
    """The arguments bound to the client method's parameters; None where kube.py computes a value."""

    def __str__(self) -> str:
        return f"kube.py Kube.{self.function} calls {self.api.__name__}.{self.method}"


def _api_clients(tree: ast.Module) -> dict[str, type]:
    """`self.<attribute> = <kubernetes API class>(...)`: each attribute and its class."""
    clients = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            api = getattr(kube, ast.unparse(node.value.func), None)
            if inspect.isclass(api) and api.__module__.startswith("kubernetes.client.api."):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                        clients[target.attr] = api
    return clients


def _client_method(node: ast.AST, clients: Mapping[str, type]) -> tuple[type, str] | None:
    """(API class, method name) when `node` is `self.<client>.<method>`."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and ast.unparse(node.value.value) == "self"
        and node.value.attr in clients
    ):
        return clients[node.value.attr], node.attr
    return None


def _value(node: ast.expr) -> object:
    """A literal, or a module-level constant of kube.py (GROUP, PLURAL, … from servicebuild.api.models)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(kube, node.id, None)
        return value if isinstance(value, str | bool) else None
    return None


def kube_api_calls() -> list[ApiCall]:
    """Every client method kube.py uses, called directly (`self._batch.create_namespaced_job(ns, job)`) or
    handed with its arguments to a helper (`self._call(action, self._core.read_namespaced_secret, name, ns)`:
    the arguments after the method are its arguments)."""
    tree = ast.parse(KUBE_PY.read_text())
    clients = _api_clients(tree)
    assert clients, "kube.py creates no kubernetes API client as self.<attribute>"
    calls: dict[int, ApiCall] = {}
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    for function in functions:
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            candidates = [(call.func, call.args)]
            candidates += [(arg, call.args[index + 1 :]) for index, arg in enumerate(call.args)]
            for reference, args in candidates:
                found = _client_method(reference, clients)
                if found is None or id(reference) in calls:
                    continue
                api, method = found
                assert not any(isinstance(arg, ast.Starred) for arg in args), ast.unparse(call)
                keywords = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
                bound = inspect.signature(getattr(api, method)).bind_partial(None, *args, **keywords)
                arguments = {name: _value(node) for name, node in bound.arguments.items() if name != "self"}
                calls[id(reference)] = ApiCall(function.name, api, method, arguments)
    unread = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if _client_method(node, clients) is not None and id(node) not in calls
    ]
    assert not unread, (
        f"kube.py uses {unread} in a way this test cannot read: call it, or pass it to a helper"
    )
    return list(calls.values())


def in_a_namespace(call: ApiCall) -> bool:
    """Whether the request names a namespace, which a RoleBinding there can grant."""
    return "/namespaces/{namespace}/" in client_request(call.api, call.method)[1]


class _ResponseRecorder(ApiClient):
    """An ApiClient that records the method and path of each request and answers it with an empty list."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def call_api(self, method: str, url: str, *_: Any, **__: Any) -> Any:
        self.requests.append((method, urlsplit(url).path))
        return SimpleNamespace(status=200, response=SimpleNamespace(data=b'{"items": []}'))


def serving_methods() -> set[str]:
    """The Kube methods told which namespaces the operator serves: those with a `namespaces` parameter."""
    return {
        name
        for name, function in inspect.getmembers(kube.Kube, inspect.isfunction)
        if "namespaces" in inspect.signature(function).parameters
    }


def requests_outside(method: str, namespaces: Sequence[str]) -> list[str]:
    """The requests `Kube.<method>(namespaces)` makes that are not within one of `namespaces`."""
    client = _ResponseRecorder()
    result = getattr(kube.Kube(client), method)(namespaces)
    if isinstance(result, Iterator):  # a generator requests as it is read (servicebuild_pages)
        list(result)
    assert client.requests, f"Kube.{method}({namespaces}) made no request"
    return [
        f"{verb} {path}"
        for verb, path in client.requests
        if not any(f"/namespaces/{namespace}/" in path for namespace in namespaces)
    ]


def kube_needs(scoped: ScopedNeeds, mode: str) -> None:
    """A call whose request names no namespace is needed cluster-wide, unless it is made by a serving method
    that, given the namespaces of `mode`, requests only within them (the operator passes its setting:
    test_the_operator_tells_kube_py_the_namespaces_it_serves)."""
    namespaces = kopf_run_arguments(mode)["namespaces"]
    for call in kube_api_calls():
        group, resource, verb = request_permission(call.api, call.method, call.arguments)
        confined = call.function in serving_methods() and not requests_outside(call.function, namespaces)
        if call.function in OWN_NAMESPACE_FUNCTIONS:
            need(scoped.own, group, resource, [verb], str(call))
        elif in_a_namespace(call):
            need(scoped.namespaced, group, resource, [verb], str(call))
        elif not namespaces or not confined:
            need(scoped.cluster, group, resource, [verb], str(call))


# Kopf: what handlers.py registers and what the entry point configures


@cache
def kopf_run_arguments(mode: str) -> dict[str, Any]:
    """The keyword arguments `python -m servicebuild` passes to kopf.run in one of WATCHING_MODES."""
    captured: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("SERVICEBUILD_")]:
            patch.delenv(name)
        for name, value in WATCHING_MODES[mode].items():
            patch.setenv(name, value)
        patch.setattr(kopf, "run", lambda **arguments: captured.update(arguments))
        patch.setattr(kopf, "configure", lambda **_: None)  # it would reconfigure the test run's logging
        patch.setattr(kube.Kube, "from_environment", classmethod(lambda cls, *_: cls(ApiClient())))
        entry_point.main([])  # not pytest's own arguments
    assert "settings" in captured, "python -m servicebuild did not call kopf.run(settings=...)"
    return captured


def _resource(selector: kopf_references.Selector) -> tuple[str, str]:
    """A handler's (group, plural); the handlers name resources by group, version and plural."""
    name = selector.plural or selector.any_name
    assert selector.group is not None, f"{selector}: name the API group, so the permission is unambiguous"
    assert name is not None, f"{selector}: name the plural"
    assert name == name.lower(), f"{selector}: name the plural, not the kind"
    return selector.group, name


def _writes_status(storage: object) -> bool:
    parts = getattr(storage, "storages", [storage])  # the Multi*Storage classes combine several
    return any(isinstance(part, kopf.StatusProgressStorage | kopf.StatusDiffBaseStorage) for part in parts)


def kopf_needs(scoped: ScopedNeeds, mode: str) -> None:
    arguments = kopf_run_arguments(mode)
    settings: kopf.OperatorSettings = arguments["settings"]
    registry = arguments.get("registry") or kopf.get_default_registry()
    # Kopf's own rule: no namespaces and no cluster-wide flag means cluster-wide.
    clusterwide = bool(arguments.get("clusterwide")) or not arguments.get("namespaces")
    standalone = arguments.get("standalone")
    standalone = settings.peering.standalone if standalone is None else standalone
    assert not registry._webhooks.get_all_handlers(), "admission webhooks need RBAC this test does not derive"

    watched = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]
    assert watched, "no Kopf handler is registered: was servicebuild.handlers imported?"
    cluster_scoped = {_resource(kopf_references.CRDS), _resource(kopf_references.NAMESPACES)}
    for handler in watched:
        group, plural = _resource(handler.selector)
        why = f"Kopf lists and watches {plural} for {handler.id}"
        where = scoped.cluster if clusterwide or (group, plural) in cluster_scoped else scoped.namespaced
        need(where, group, plural, ["list", "watch"], why)
    storages = [settings.persistence.progress_storage, settings.persistence.diffbase_storage]
    for handler in [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]:
        group, plural = _resource(handler.selector)
        finalizer = " and its finalizer" if handler.requires_finalizer else ""
        why = f"Kopf patches its progress and diff-base annotations{finalizer} into {plural} for {handler.id}"
        need(scoped.namespaced, group, plural, ["patch"], why)
        if any(_writes_status(storage) for storage in storages):
            need(scoped.namespaced, group, f"{plural}/status", ["patch"], f"{why}, in their status")
    if settings.posting.enabled:
        why = "Kopf posts handler errors as Events"
        need(scoped.namespaced, *_resource(kopf_references.EVENTS), ["create"], why)
    if not settings.scanning.disabled:
        why = "Kopf's cluster scanning notices CRDs installed or changed at run time"
        need(scoped.cluster, *_resource(kopf_references.CRDS), ["list", "watch"], why)
        if not clusterwide:
            why = f"Kopf's cluster scanning, with {mode}: serves the named namespaces as they come and go"
            need(scoped.cluster, *_resource(kopf_references.NAMESPACES), ["list", "watch"], why)
    if not standalone:
        peering = kopf_references.CLUSTER_PEERINGS_K if clusterwide else kopf_references.NAMESPACED_PEERINGS_K
        why = f"Kopf's peering, with {mode} (docs/deployment-rbac.yaml of Kopf)"
        where = scoped.cluster if clusterwide else scoped.namespaced
        need(where, *_resource(peering), ["get", "list", "watch", "patch"], why)


# The build Job's owner reference


OWNERS = {
    (f"{GROUP}/{VERSION}", KIND): PLURAL,
    (f"{GROUP}/{VERSION}", POOL_KIND): POOL_PLURAL,
}
"""The plural of each kind the operator's objects name as their owner."""


def _rendered_owned_objects() -> list[tuple[str, dict[str, Any]]]:
    """One of each object the operator renders with an owner reference, and the module rendering it."""
    build = ServiceBuild.model_validate(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "0" * 8, "generation": 1},
            "spec": {"source": {"configMap": {"name": "context"}}, "output": {"image": "r.example/a:1"}},
        }
    )
    pool = BuilderPool.model_validate(
        {"metadata": {"name": "builders", "namespace": "shop", "uid": "1" * 8}, "spec": {}}
    )
    claimed = pool.model_copy(
        update={"spec": pool.spec.model_validate({"storage": {"persistentVolumeClaim": {"size": "1Gi"}}})}
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ca = new_ca("test", now)
    server = issue(ca, "server", now, ("server",))
    return [
        ("render/job.py", render_job(build, Settings(), BuildInputs(timestamp="20260101000000"))),
        ("render/pool.py", render_daemon(pool, Settings(), server)),
        ("render/pool.py", render_daemon(claimed, Settings(), server)),
        ("render/pool.py", render_service(pool)),
        ("render/pool.py", render_server_secret(pool, ca, server)),
    ]


def owner_reference_needs(needs: Needs) -> None:
    """Needed in the namespace of the owned object and its owner."""
    for module, rendered in _rendered_owned_objects():
        for owner in rendered["metadata"]["ownerReferences"]:
            if owner.get("blockOwnerDeletion"):
                plural = OWNERS[owner["apiVersion"], owner["kind"]]  # a new owner kind needs its line
                why = (
                    f"{module}: the {rendered['kind']}'s owner reference sets blockOwnerDeletion, which the "
                    "OwnerReferencesPermissionEnforcement admission plugin allows only with this"
                )
                need(needs, GROUP, f"{plural}/finalizers", ["update"], why)


@cache
def mode_needs(mode: str) -> ScopedNeeds:
    """What the operator requests in one of WATCHING_MODES, cluster-wide and within a watched namespace."""
    scoped = ScopedNeeds()
    kube_needs(scoped, mode)
    kopf_needs(scoped, mode)
    owner_reference_needs(scoped.namespaced)
    return scoped


@cache
def derived_needs() -> Needs:
    """Every permission the operator needs, in either watching mode, wherever it is requested."""
    needs: Needs = {}
    for mode in WATCHING_MODES:
        scoped = mode_needs(mode)
        for permission, reasons in [*scoped.cluster.items(), *scoped.namespaced.items(), *scoped.own.items()]:
            for why in reasons:
                need(needs, *permission[:2], [permission[2]], why)
    return needs


# What deploy/ grants


def role_rules(documents: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        rule
        for document in documents
        if isinstance(document, dict) and document.get("kind") in {"ClusterRole", "Role"}
        for rule in document.get("rules") or []
    ]


def base_rules() -> list[dict[str, Any]]:
    return role_rules(yaml.safe_load_all(RBAC_YAML.read_text()))


def granted_permissions(rules: Iterable[Mapping[str, Any]]) -> Iterator[Permission]:
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    yield group, resource, verb


def describe(permissions: Iterable[Permission], needs: Needs | None = None) -> str:
    lines = []
    for group, resource, verb in sorted(permissions):
        line = f"  {group or '(core)'} {resource} {verb}"
        if needs is not None:
            line += "  <- " + "; ".join(needs[group, resource, verb])
        lines.append(line)
    return "\n".join(lines) or "  (none)"


@dataclass(frozen=True)
class Grants:
    """What an install grants the operator's ServiceAccount, through the bindings that name it."""

    cluster: set[Permission]
    namespaces: dict[str, set[Permission]]


def _subject(subject: Mapping[str, Any]) -> tuple[str, str, str | None]:
    return subject["kind"], subject["name"], subject.get("namespace")


def operator_grants(documents: Sequence[Mapping[str, Any]]) -> Grants:
    roles = {
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc.get("rules") or []
        for doc in documents
        if doc["kind"] in {"ClusterRole", "Role"}
    }
    grants = Grants(cluster=set(), namespaces={})
    for binding in documents:
        subjects = {_subject(subject) for subject in binding.get("subjects") or []}
        if binding["kind"] not in {"ClusterRoleBinding", "RoleBinding"} or OPERATOR_ACCOUNT not in subjects:
            continue
        ref, namespace = binding["roleRef"], binding["metadata"].get("namespace")
        role = (ref["kind"], None if ref["kind"] == "ClusterRole" else namespace, ref["name"])
        assert role in roles, f"{binding['kind']} {binding['metadata']['name']} binds {role}, not installed"
        granted = set(granted_permissions(roles[role]))
        if binding["kind"] == "ClusterRoleBinding":
            grants.cluster.update(granted)
        else:
            grants.namespaces.setdefault(namespace, set()).update(granted)
    return grants


def differences(where: str, needs: Needs, granted: set[Permission]) -> list[str]:
    """What is needed and not granted, and granted and not needed, `where` (empty when they match)."""
    missing, extra = needs.keys() - granted, granted - needs.keys()
    if not missing and not extra:
        return []
    return [
        f"{where}, needed, not granted:\n{describe(missing, needs)}",
        f"{where}, granted, not needed:\n{describe(extra)}",
    ]


def tenant_roles() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(TENANT_ROLES_YAML.read_text()) if doc]


def aggregated(roles: Sequence[Mapping[str, Any]]) -> dict[str, set[Permission]]:
    """Each ClusterRole's permissions as Kubernetes' aggregation controller sets them: a role with an
    aggregationRule gets those of every role its selectors match, aggregated ones included, until nothing
    changes (so view's reach edit, which aggregates view, and admin, which aggregates edit)."""
    granted = {role["metadata"]["name"]: set(granted_permissions(role.get("rules") or [])) for role in roles}
    changed = True
    while changed:
        changed = False
        for role in roles:
            name = role["metadata"]["name"]
            for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors", []):
                for other in roles:
                    labels = other["metadata"].get("labels") or {}
                    if selector["matchLabels"].items() <= labels.items():
                        before = len(granted[name])
                        granted[name] |= granted[other["metadata"]["name"]]
                        changed |= len(granted[name]) > before
    return granted


# The tests


def test_cluster_role_grants_exactly_what_the_code_uses() -> None:
    needs = derived_needs()
    granted = list(granted_permissions(base_rules()))
    # Twice within one role; the ClusterRole and the own namespace's Role may both grant a permission
    # (Secrets: read in the watched namespaces and, the pools' CAs, in the operator's own).
    twice = sorted(
        {
            permission
            for document in yaml.safe_load_all(RBAC_YAML.read_text())
            for role in [list(granted_permissions(role_rules([document])))]
            for permission in role
            if role.count(permission) > 1
        }
    )
    missing = needs.keys() - set(granted)
    extra = set(granted) - needs.keys()
    matches = not missing and not extra and not twice
    assert matches, (
        f"{RBAC_YAML.relative_to(ROOT)} does not match what the code uses.\n"
        f"Needed, not granted (add a rule, with a comment saying why):\n{describe(missing, needs)}\n"
        f"Granted, not used by the code (remove it):\n{describe(extra)}\n"
        f"Granted twice:\n{describe(twice)}"
    )


def test_the_derivation_finds_every_source_of_need() -> None:
    """Guards the derivation itself: an empty or partial parse would make the test above meaningless."""
    calls = kube_api_calls()
    assert {call.api for call in calls} == {
        AppsV1Api,
        BatchV1Api,
        CoreV1Api,
        CustomObjectsApi,
        CoordinationV1Api,
    }
    assert {call.function for call in calls} >= {"get_job", "create_job", "patch_servicebuild_status"}
    reasons = [why for whys in derived_needs().values() for why in whys]
    for source in (
        "kube.py Kube.",
        "Kopf lists and watches",
        "Kopf posts",
        "Kopf's cluster scanning",
        "render/job.py",
        "render/pool.py",
    ):
        assert any(why.startswith(source) for why in reasons), source


def test_the_entry_point_is_derived_in_both_watching_modes() -> None:
    everywhere = kopf_run_arguments("all namespaces")
    named = kopf_run_arguments("SERVICEBUILD_NAMESPACES")
    assert everywhere["clusterwide"] is True
    assert not everywhere["namespaces"]
    assert named["clusterwide"] is False
    assert sorted(named["namespaces"]) == ["team-payments", "team-shop"]


def test_only_kube_py_imports_the_kubernetes_client() -> None:
    """So kube.py is the only place the operator's own API calls can come from (the command line's own
    calls, in cli/gateway.py, run with a person's rights)."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "kubernetes" for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"kube.py", "cli/gateway.py"}


def test_no_wildcards_resource_names_or_non_resource_urls() -> None:
    rules = [*base_rules(), *role_rules(tenant_roles())]
    assert rules
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert rule[field], rule
            assert not [value for value in rule[field] if "*" in value], rule


def test_secrets_are_never_listed_or_watched() -> None:
    """Listing or watching Secrets would hand the operator every credential in the cluster. It reads the
    ones a ServiceBuild names, and writes only a builder pool's certificates (and, in its own namespace,
    deletes a pool's CA)."""
    granted = {
        verb
        for group, resource, verb in granted_permissions(base_rules())
        if (group, resource) == ("", "secrets")
    }
    needed = {verb for group, resource, verb in derived_needs() if (group, resource) == ("", "secrets")}
    assert granted <= {"get", "create", "update", "delete"}
    assert needed <= {"get", "create", "update", "delete"}
    namespaced = {
        verb for group, resource, verb in mode_needs("all namespaces").namespaced if resource == "secrets"
    }
    assert namespaced == {"get", "create", "update"}, "a Secret of a tenant is never deleted"


@pytest.mark.parametrize("path", [RBAC_YAML, TENANT_ROLES_YAML], ids=lambda path: path.name)
def test_every_rbac_rule_has_a_comment(path: Path) -> None:
    lines = path.read_text().splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("- apiGroups:")]
    # Every rule starts with apiGroups at the left margin, so none escapes the comment check below.
    assert len(starts) == len(role_rules(yaml.safe_load_all(path.read_text())))
    for index in starts:
        assert lines[index - 1].startswith("#"), f"no comment above line {index + 1}: {lines[index]}"


def roles(documents: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    return {
        (doc["kind"], doc["metadata"]["name"]): (doc.get("rules"), doc["metadata"].get("labels"))
        for doc in documents
        if doc["kind"] in {"ClusterRole", "Role"}
    }


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_kustomization_renders_the_base_roles(directory: Path) -> None:
    """An overlay or component may bind the roles elsewhere, never change them."""
    assert roles(kustomizations.render(directory)) == roles(kustomizations.render(BASE))


def own_namespace(documents: Sequence[Mapping[str, Any]]) -> str:
    """The operator's namespace: its Deployment's."""
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    return str(deployment["metadata"]["namespace"])


def own_needs() -> Needs:
    needs: Needs = {}
    for mode in WATCHING_MODES:
        for permission, reasons in mode_needs(mode).own.items():
            for why in reasons:
                need(needs, *permission[:2], [permission[2]], why)
    return needs


def test_the_cluster_wide_install_grants_every_request_cluster_wide() -> None:
    """Everything cluster-wide but the Lease, which a Role grants in the operator's namespace only."""
    documents = kustomizations.render(BASE)
    grants = operator_grants(documents)
    own = own_namespace(documents)
    assert set(grants.namespaces) == {own}
    cluster_needs: Needs = {}
    for mode in WATCHING_MODES:
        scoped = mode_needs(mode)
        for permission, reasons in [*scoped.cluster.items(), *scoped.namespaced.items()]:
            for why in reasons:
                need(cluster_needs, *permission[:2], [permission[2]], why)
    problems = differences("cluster-wide", cluster_needs, grants.cluster)
    problems += differences(f"in {own}", own_needs(), grants.namespaces[own])
    assert not problems, "\n".join(problems)


def test_the_namespaced_install_grants_every_request_where_the_operator_makes_it() -> None:
    """Cluster-wide only what no namespace confines; the rest by a RoleBinding in each watched namespace."""
    documents = kustomizations.render(NAMESPACED_INSTALL)
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mode = "SERVICEBUILD_NAMESPACES"
    # The install sets what the mode is derived with, so the needs below are this install's.
    assert {"name": mode, "value": WATCHING_MODES[mode][mode]} in container["env"]
    watched = kopf_run_arguments(mode)["namespaces"]
    needs = mode_needs(mode)
    grants = operator_grants(documents)

    problems = differences("cluster-wide", needs.cluster, grants.cluster)
    for namespace in watched:
        problems += differences(f"in {namespace}", needs.namespaced, grants.namespaces.get(namespace, set()))
    own = own_namespace(documents)
    problems += differences(f"in {own}", needs.own, grants.namespaces.get(own, set()))
    for namespace, granted in grants.namespaces.items():
        if namespace not in watched and namespace != own:
            problems += differences(f"in {namespace}, not watched", {}, granted & needs.namespaced.keys())
    assert not problems, "\n".join(problems)
    assert {resource for _, resource, _ in grants.cluster} == {"customresourcedefinitions", "namespaces"}


def test_every_kube_py_request_without_a_namespace_is_made_only_when_serving_every_namespace() -> None:
    """A serving method lists every namespace at once only when given none; otherwise only the ones given."""
    calls = [call for call in kube_api_calls() if not in_a_namespace(call)]
    assert {call.function for call in calls} >= {"servicebuild_pages", "list_build_jobs"}
    for call in calls:
        assert call.function in serving_methods(), f"{call}: a request outside the watched namespaces"
        assert requests_outside(call.function, []), f"{call}: no request of every namespace is recorded"
        assert requests_outside(call.function, ["team-shop", "team-payments"]) == []


def test_the_operator_tells_kube_py_the_namespaces_it_serves() -> None:
    """Every use of a serving method passes it the setting, directly or through asyncio.to_thread. The
    command line (cli/) is no part of the operator: it lists where the person asks, with their rights."""
    methods = serving_methods()
    used = []
    for path in (path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "cli"):
        for call in (node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)):
            for index, reference in enumerate([call.func, *call.args]):
                if isinstance(reference, ast.Attribute) and reference.attr in methods:
                    arguments = [ast.unparse(argument) for argument in call.args[index:]]
                    where = f"{path.relative_to(PACKAGE)}: {ast.unparse(call)}"
                    assert arguments, where
                    # kube.py's own serving methods pass on the namespaces they were given.
                    passed_on = path == KUBE_PY and arguments[0] == "namespaces"
                    assert passed_on or arguments[0].endswith("settings.namespaces"), where
                    used.append(reference.attr)
    assert set(used) == methods


def test_view_edit_and_admin_get_the_tenant_roles() -> None:
    """Through Kubernetes' own aggregation chain (its bootstrap roles, tests/unit/kubernetes_roles): view
    reads ServiceBuilds and BuilderPools and their status, edit and admin also write ServiceBuilds, admin
    BuilderPools; nobody but the operator writes a status."""
    kubernetes_roles = yaml.safe_load(KUBERNETES_ROLES_YAML.read_text())["items"]
    granted = aggregated([*kubernetes_roles, *tenant_roles()])
    reads = ("get", "list", "watch")
    read = {(GROUP, resource, verb) for resource in (PLURAL, f"{PLURAL}/status") for verb in reads}
    write = {(GROUP, PLURAL, verb) for verb in ("create", "update", "patch", "delete", "deletecollection")}

    pool_read = {
        (GROUP, resource, verb) for resource in ("builderpools", "builderpools/status") for verb in reads
    }
    pool_write = {
        (GROUP, "builderpools", verb) for verb in ("create", "update", "patch", "delete", "deletecollection")
    }

    def ours(role: str) -> set[Permission]:
        return {permission for permission in granted[role] if permission[0] == GROUP}

    assert ours("view") == read | pool_read
    assert ours("edit") == read | write | pool_read
    assert ours("admin") == read | write | pool_read | pool_write, "pools are the namespace admins' to make"


CUSTOM = {"group": "example.com", "plural": "widgets"}
CLIENT_METHODS: list[tuple[type, str, dict[str, object], Permission]] = [
    (BatchV1Api, "read_namespaced_job", {}, ("batch", "jobs", "get")),
    (BatchV1Api, "list_namespaced_job", {}, ("batch", "jobs", "list")),
    (BatchV1Api, "list_namespaced_job", {"watch": True}, ("batch", "jobs", "watch")),
    (BatchV1Api, "create_namespaced_job", {}, ("batch", "jobs", "create")),
    (BatchV1Api, "patch_namespaced_job", {}, ("batch", "jobs", "patch")),
    (BatchV1Api, "replace_namespaced_job_status", {}, ("batch", "jobs/status", "update")),
    (BatchV1Api, "delete_namespaced_job", {}, ("batch", "jobs", "delete")),
    (BatchV1Api, "delete_collection_namespaced_job", {}, ("batch", "jobs", "deletecollection")),
    (CoreV1Api, "read_namespaced_config_map", {}, ("", "configmaps", "get")),
    (CoreV1Api, "read_namespaced_secret", {}, ("", "secrets", "get")),
    (CoreV1Api, "list_pod_for_all_namespaces", {}, ("", "pods", "list")),
    (CoreV1Api, "create_namespaced_event", {}, ("", "events", "create")),
    (CoreV1Api, "read_namespace", {}, ("", "namespaces", "get")),
    (CustomObjectsApi, "get_namespaced_custom_object", CUSTOM, ("example.com", "widgets", "get")),
    (CustomObjectsApi, "list_cluster_custom_object", CUSTOM, ("example.com", "widgets", "list")),
    (
        CustomObjectsApi,
        "patch_namespaced_custom_object_status",
        CUSTOM,
        ("example.com", "widgets/status", "patch"),
    ),
]


@pytest.mark.parametrize(
    ("api", "method", "arguments", "expected"),
    CLIENT_METHODS,
    ids=[f"{method}{'-watch' if 'watch' in arguments else ''}" for _, method, arguments, _ in CLIENT_METHODS],
)
def test_client_methods_map_to_permissions(
    api: type, method: str, arguments: dict[str, object], expected: Permission
) -> None:
    assert request_permission(api, method, arguments) == expected


def test_a_custom_object_call_without_a_known_group_fails() -> None:
    with pytest.raises(AssertionError, match=r"cannot resolve \{group\}"):
        request_permission(CustomObjectsApi, "list_cluster_custom_object", {"plural": "widgets"})
