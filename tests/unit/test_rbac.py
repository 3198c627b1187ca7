"""The operator's RBAC, derived from the code: deploy/base/rbac.yaml grants exactly what the operator uses.

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
- the ClusterRole grants exactly that: nothing missing, nothing extra, nothing twice; a failure lists each
  difference and, for a missing one, the code that needs it;
- no wildcard, no resourceNames or nonResourceURLs, Secrets only read by name (never listed or watched);
- every rule has a comment right above it saying why;
- every kustomization in deploy/ renders the same rules as rbac.yaml (an overlay cannot widen them), and
  so does the base with each optional component;
- the mapping from a client method to a permission, as a table (the client's naming convention: read → get,
  list → list or watch, create, patch, replace → update, delete, delete_collection → deletecollection).
"""

import ast
import inspect
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._cogs.structs import references as kopf_references
from kubernetes.client import ApiClient, BatchV1Api, CoreV1Api, CustomObjectsApi

import servicebuild.__main__ as entry_point
from servicebuild import kube
from servicebuild.api.models import GROUP, KIND, PLURAL, VERSION, ServiceBuild
from servicebuild.config import Settings
from servicebuild.render.job import BuildInputs, render_job
from support import kustomizations

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "servicebuild"
KUBE_PY = PACKAGE / "kube.py"
RBAC_YAML = ROOT / "deploy" / "base" / "rbac.yaml"
KUSTOMIZATIONS = kustomizations.kustomizations()

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


def kube_needs(needs: Needs) -> None:
    for call in kube_api_calls():
        group, resource, verb = request_permission(call.api, call.method, call.arguments)
        need(needs, group, resource, [verb], str(call))


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


def kopf_needs(needs: Needs, mode: str) -> None:
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
    for handler in watched:
        group, plural = _resource(handler.selector)
        need(needs, group, plural, ["list", "watch"], f"Kopf lists and watches {plural} for {handler.id}")
    storages = [settings.persistence.progress_storage, settings.persistence.diffbase_storage]
    for handler in [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]:
        group, plural = _resource(handler.selector)
        finalizer = " and its finalizer" if handler.requires_finalizer else ""
        why = f"Kopf patches its progress and diff-base annotations{finalizer} into {plural} for {handler.id}"
        need(needs, group, plural, ["patch"], why)
        if any(_writes_status(storage) for storage in storages):
            need(needs, group, f"{plural}/status", ["patch"], f"{why}, in their status")
    if settings.posting.enabled:
        need(needs, *_resource(kopf_references.EVENTS), ["create"], "Kopf posts handler errors as Events")
    if not settings.scanning.disabled:
        why = "Kopf's cluster scanning notices CRDs installed or changed at run time"
        need(needs, *_resource(kopf_references.CRDS), ["list", "watch"], why)
        if not clusterwide:
            why = f"Kopf's cluster scanning, with {mode}: serves the named namespaces as they come and go"
            need(needs, *_resource(kopf_references.NAMESPACES), ["list", "watch"], why)
    if not standalone:
        peering = kopf_references.CLUSTER_PEERINGS_K if clusterwide else kopf_references.NAMESPACED_PEERINGS_K
        why = f"Kopf's peering, with {mode} (docs/deployment-rbac.yaml of Kopf)"
        need(needs, *_resource(peering), ["get", "list", "watch", "patch"], why)


# The build Job's owner reference


def owner_reference_needs(needs: Needs) -> None:
    build = ServiceBuild.model_validate(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "0" * 8, "generation": 1},
            "spec": {"source": {"configMap": {"name": "context"}}, "output": {"image": "r.example/a:1"}},
        }
    )
    job = render_job(build, Settings(), BuildInputs(timestamp="20260101000000"))
    for owner in job["metadata"]["ownerReferences"]:
        if owner.get("blockOwnerDeletion"):
            # The plural of no other kind is known here; a new owner kind needs its own line.
            assert (owner["apiVersion"], owner["kind"]) == (f"{GROUP}/{VERSION}", KIND), owner
            why = (
                "render/job.py: the build Job's owner reference sets blockOwnerDeletion, which the "
                "OwnerReferencesPermissionEnforcement admission plugin allows only with this"
            )
            need(needs, GROUP, f"{PLURAL}/finalizers", ["update"], why)


@cache
def derived_needs() -> Needs:
    needs: Needs = {}
    kube_needs(needs)
    for mode in WATCHING_MODES:
        kopf_needs(needs, mode)
    owner_reference_needs(needs)
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


# The tests


def test_cluster_role_grants_exactly_what_the_code_uses() -> None:
    needs = derived_needs()
    granted = list(granted_permissions(base_rules()))
    twice = sorted({permission for permission in granted if granted.count(permission) > 1})
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
    assert {call.api for call in calls} == {BatchV1Api, CoreV1Api, CustomObjectsApi}
    assert {call.function for call in calls} >= {"get_job", "create_job", "patch_servicebuild_status"}
    reasons = [why for whys in derived_needs().values() for why in whys]
    for source in (
        "kube.py Kube.",
        "Kopf lists and watches",
        "Kopf patches",
        "Kopf posts",
        "Kopf's cluster scanning",
        "render/job.py",
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
    """So kube.py is the only place the operator's own API calls can come from."""
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "kubernetes" for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"kube.py"}


def test_no_wildcards_resource_names_or_non_resource_urls() -> None:
    rules = base_rules()
    assert rules
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert rule[field], rule
            assert not [value for value in rule[field] if "*" in value], rule


def test_secrets_are_only_read_by_name() -> None:
    """Listing or watching Secrets would hand the operator every credential in the cluster."""
    granted = {
        verb
        for group, resource, verb in granted_permissions(base_rules())
        if (group, resource) == ("", "secrets")
    }
    needed = {verb for group, resource, verb in derived_needs() if (group, resource) == ("", "secrets")}
    assert granted <= {"get"}
    assert needed <= {"get"}


def test_every_rbac_rule_has_a_comment() -> None:
    lines = RBAC_YAML.read_text().splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("- apiGroups:")]
    # Every rule starts with apiGroups at the left margin, so none escapes the comment check below.
    assert len(starts) == len(base_rules())
    for index in starts:
        assert lines[index - 1].startswith("#"), f"no comment above line {index + 1}: {lines[index]}"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not on the PATH; .ci/run installs it")
    return path


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_kustomization_renders_the_base_rules(directory: Path) -> None:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert role_rules(yaml.safe_load_all(result.stdout)) == base_rules()


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
