"""What a build reads besides its spec: the ConfigMap context, the Secrets it names, the git commit its
revision resolves to and that commit's context (for the Dockerfile rules and the first cache miss). Read
through the Kubernetes and git gateways; every problem a user must fix is a `Problem` naming the spec field,
every passing one a transient gateway error. A git context that cannot be read is no problem: the build
goes on without the operator's findings."""

import base64
import binascii
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from servicebuild import buildcontext, naming, policy
from servicebuild.api.models import BaseImage, Finding, ObjectMeta, ServiceBuild, ServiceBuildSpec
from servicebuild.config import Settings
from servicebuild.credentials import (
    DOCKER_CONFIG_KEY,
    Credentials,
    GitCredentials,
    git_credentials_from_secret,
    push_credentials,
    secret_values,
)
from servicebuild.failures import Failure, Reason
from servicebuild.findings import configmap_findings, context_findings, reads_content
from servicebuild.gitremote import ContextTree, GitError
from servicebuild.giturl import parse_git_url
from servicebuild.naming import ANNOTATION_SOURCE_PUSHED_AT
from servicebuild.polling import (
    BaseImageDigests,
    CommitCache,
    HostPace,
    LookupKey,
    credentials_fingerprint,
    next_poll,
)
from servicebuild.registry import RegistryError
from servicebuild.render.job import GIT_AUTH_KEYS, BuildInputs, GitAuth
from servicebuild.render.pool import CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY
from servicebuild.render.pool_run import RunMaterial
from servicebuild.times import parse_time

logger = logging.getLogger(__name__)

MAX_CACHED_CONTEXTS = 8
"""The git contexts kept, most recently used first: a queued build is reconciled again and again, and its
read-back compares its commit's tree with the last success's, so each commit is fetched once."""
ContextKey = tuple[str, str, str, str | None, str, str]
"""Namespace, URL, commit, contextDir, Dockerfile and credentials' fingerprint of a git context."""


class SourceGateway(Protocol):
    """The part of the Kubernetes gateway that reads a build's inputs."""

    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class GitGateway(Protocol):
    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str: ...
    def context_tree(
        self,
        url: str,
        commit: str,
        credentials: GitCredentials | None,
        context_dir: str | None,
        read: Callable[[str], bool],
    ) -> ContextTree | None: ...


class Problem(Exception):  # noqa: N818 - an outcome for the user to act on, not an error of the operator
    """Something only a change of the spec, or of the objects it names, can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(reason, message)


@dataclass(frozen=True)
class Polled:
    """The newest commit of a polled revision, and when to look again."""

    commit: str
    next_poll: datetime


class ContextCache:
    """The last `MAX_CACHED_CONTEXTS` git contexts read (None: not checked), shared by the worker threads;
    callers for the same key wait for one read and share it (many ServiceBuilds may build one commit)."""

    def __init__(self) -> None:
        self._contexts: OrderedDict[ContextKey, ContextTree | None] = OrderedDict()
        self._locks: dict[ContextKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: ContextKey, read: Callable[[], ContextTree | None]) -> ContextTree | None:
        """The context of `key`, read (`read`) unless kept."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._contexts:
                    self._contexts.move_to_end(key)
                    return self._contexts[key]
            context = read()
            with self._guard:
                self._contexts[key] = context
                while len(self._contexts) > MAX_CACHED_CONTEXTS:
                    dropped, _ = self._contexts.popitem(last=False)
                    self._locks.pop(dropped, None)
            return context


class InputReader:
    """Reads and checks what one build needs, for the reconciler."""

    def __init__(self, kube: SourceGateway, git: GitGateway, settings: Settings) -> None:
        self.kube = kube
        self.git = git
        self.settings = settings
        self.commits = CommitCache()
        self.pace = HostPace(settings.git_lookups_per_host_per_second)
        self.base_images = BaseImageDigests()
        self.git_contexts = ContextCache()

    def polled_commit(self, servicebuild: ServiceBuild, now: datetime) -> Polled | None:
        """The newest commit of a revision the spec polls, looked up at most once per interval for all the
        ServiceBuilds of a namespace polling it with the same credentials; None without polling.

        A push a webhook announced (the `servicebuild.dev/source-pushed-at` annotation) makes a lookup
        older than it stale at once.
        """
        meta, spec = servicebuild.metadata, servicebuild.spec
        git = spec.source.git
        interval = policy.poll_interval(spec)
        if git is None or interval is None:
            return None
        problem = policy.poll_problem(spec, self.settings)
        if problem is not None:
            raise Problem(problem.reason, problem.message)
        credentials, fingerprint = self._git_credentials(meta, spec)
        key = LookupKey(meta.namespace, git.url, git.revision, fingerprint)
        pushed = parse_time(meta.annotations.get(ANNOTATION_SOURCE_PUSHED_AT))
        fresh_after = max(now - interval, pushed or now - interval)
        lookup = self.commits.latest(
            key,
            lambda given: self._resolve(git.url, git.revision, given),
            credentials,
            fresh_after=fresh_after,
            now=now,
        )
        return Polled(lookup.commit, next_poll(lookup.at, interval, f"{meta.namespace}/{meta.name}"))

    def latest_base_images(self, servicebuild: ServiceBuild) -> tuple[BaseImage, ...] | None:
        """The digests the last build's base images have now, as the last check found them; None unless
        the spec follows its base images. A reference not checked yet keeps the digest the build used."""
        status, spec = servicebuild.status, servicebuild.spec
        if not spec.triggers.base_images or not status.base_images:
            return None
        credentials = self.push_fingerprint(servicebuild)
        return tuple(
            BaseImage(ref=image.ref, digest=self.base_images.get(image.ref, credentials) or image.digest)
            for image in status.base_images
        )

    def push_fingerprint(self, servicebuild: ServiceBuild) -> str:
        """Which credentials reach the registries (the push Secret's), without holding them."""
        name = servicebuild.spec.output.push_secret
        data = self.kube.get_secret_data(servicebuild.metadata.namespace, name) if name else None
        return credentials_fingerprint(name, data)

    def context_digest(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> str | None:
        """The digest of a ConfigMap context: a change of the ConfigMap's data is a new build."""
        source = spec.source.config_map
        if source is None:
            return None
        configmap = self.kube.get_configmap(meta.namespace, source.name)
        if configmap is None:
            raise Problem(
                Reason.SOURCE_NOT_FOUND,
                f"spec.source.configMap.name: ConfigMap {source.name!r} does not exist.",
            )
        data = configmap.get("data") or {}
        binary_data = configmap.get("binaryData") or {}
        if source.archive is not None and source.archive not in binary_data:
            message = f"ConfigMap {source.name!r} has no binaryData key {source.archive!r}."
            raise Problem(Reason.SOURCE_NOT_FOUND, f"spec.source.configMap.archive: {message}")
        return naming.context_digest(data, binary_data)

    def dockerfile_findings(
        self, servicebuild: ServiceBuild, commit: str | None
    ) -> tuple[Finding, ...] | None:
        """The findings of the context the build will build, checked before its Job exists: the ConfigMap, or
        the git source at `commit`; none when the git context is not checked."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        source = spec.source.config_map
        if source is not None:
            configmap = self.kube.get_configmap(meta.namespace, source.name)
            return configmap_findings(spec, configmap) if configmap is not None else None
        if commit is None:
            return None
        context = self.git_context(servicebuild, commit)
        return context_findings(spec, context.files) if context is not None else ()

    def commit_to_build(self, servicebuild: ServiceBuild, commit: str | None) -> str | None:
        """The commit a git source's build will build: `commit` (polling found it, or an earlier reconcile
        of the same build resolved it), else the revision resolved now; None for a ConfigMap source."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        git = spec.source.git
        if git is None or commit is not None:
            return commit
        credentials, _ = self._git_credentials(meta, spec)
        return self._resolve(git.url, git.revision, credentials)

    def git_context(self, servicebuild: ServiceBuild, commit: str) -> ContextTree | None:
        """The git source's context at `commit` (every path, the content of what the rules read), fetched
        once per commit; None when it is not checked or cannot be read, which is logged at info."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        git = spec.source.git
        if git is None:
            return None
        try:
            credentials, fingerprint = self._git_credentials(meta, spec)
        except Problem:
            return None  # the build's own start says so
        key = (meta.namespace, git.url, commit, git.context_dir, spec.dockerfile, fingerprint)

        def read() -> ContextTree | None:
            try:
                context = self.git.context_tree(
                    git.url, commit, credentials, git.context_dir, reads_content(spec)
                )
            except GitError as exc:
                logger.info(
                    "The context of %s/%s at %s was not read: %s", meta.namespace, meta.name, commit, exc
                )
                return None
            if context is None:
                logger.info(
                    "The context of %s/%s at %s is not checked: its git server offers no blob-less fetch"
                    " (protocol v2 over HTTP(S) with filter), or it is larger than the operator reads",
                    meta.namespace,
                    meta.name,
                    commit,
                )
            return context

        return self.git_contexts.get(key, read)

    def context_files(
        self, meta: ObjectMeta, spec: ServiceBuildSpec, digest: str | None
    ) -> dict[str, bytes] | None:
        """The files of the ConfigMap context a build used, if the ConfigMap still holds what had `digest`;
        None for git sources, a ConfigMap changed or gone since, or an archive that cannot be read."""
        source = spec.source.config_map
        if source is None or digest is None:
            return None
        configmap = self.kube.get_configmap(meta.namespace, source.name)
        if configmap is None:
            return None
        data = configmap.get("data") or {}
        binary_data = configmap.get("binaryData") or {}
        if naming.context_digest(data, binary_data) != digest:
            return None
        return buildcontext.context_files(data, binary_data, source.archive)

    def build_inputs(self, servicebuild: ServiceBuild, inputs: BuildInputs) -> BuildInputs:
        """Check what the build needs (allowlists, Secrets) and complete `inputs` with the commit to build."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        problem = (
            policy.builder_image_problem(spec, self.settings)
            or policy.push_registry_problem(meta.namespace, spec, self.settings)
            or policy.provenance_problem(spec, self.settings)
        )
        if problem is not None:
            raise Problem(problem.reason, problem.message)
        if spec.output.push_secret is not None:
            self._secret_data(meta, "spec.output.pushSecret", spec.output.push_secret, (DOCKER_CONFIG_KEY,))
        for index, secret in enumerate(spec.secrets):
            field = f"spec.secrets[{index}].secretRef"
            self._secret_data(meta, field, secret.secret_ref.name, (secret.secret_ref.key,))
        return self._git_inputs(meta, spec, inputs)

    def run_material(
        self, servicebuild: ServiceBuild, inputs: BuildInputs, tls: dict[str, str] | None
    ) -> RunMaterial:
        """What a build on a pool reads from Secrets and its ConfigMap (`build_inputs` checked they exist);
        `tls` is the pool's Secret in the operator's namespace."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        field = "spec.builderPool"
        pair = {
            key: _decoded((tls or {}).get(key, ""), field) for key in (CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY)
        }
        docker_config = None
        if spec.output.push_secret is not None:
            field = "spec.output.pushSecret"
            data = self._secret_data(meta, field, spec.output.push_secret, (DOCKER_CONFIG_KEY,))
            docker_config = _decoded(data[DOCKER_CONFIG_KEY], field)
        git_auth = None
        git = spec.source.git
        if git is not None and git.auth_secret is not None and inputs.git_auth is not None:
            key = GIT_AUTH_KEYS[inputs.git_auth]
            field = "spec.source.git.authSecret"
            git_auth = _decoded(self._secret_data(meta, field, git.auth_secret, (key,))[key], field)
        secrets = {}
        for index, secret in enumerate(spec.secrets):
            field, ref = f"spec.secrets[{index}].secretRef", secret.secret_ref
            secrets[secret.id] = _decoded(
                self._secret_data(meta, field, ref.name, (ref.key,))[ref.key], field
            )
        context = None
        if spec.source.config_map is not None:
            context = self.context_files(meta, spec, inputs.context_digest)
            if context is None:
                raise Problem(
                    Reason.INVALID_SPEC,
                    "spec.source.configMap: the context could not be read for the builder pool (changed"
                    " since, or an archive that is not a .tar.gz of at most"
                    f" {buildcontext.MAX_UNPACKED_BYTES} bytes unpacked).",
                )
        return RunMaterial(pair, docker_config, git_auth, secrets, context)

    def push_credentials(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> Credentials | None:
        """The push Secret's credentials for the output registry; None without a push Secret."""
        secret_name = spec.output.push_secret
        if secret_name is None:
            return None
        data = self._secret_data(meta, "spec.output.pushSecret", secret_name, (DOCKER_CONFIG_KEY,))
        try:
            return push_credentials(data, spec.output.ref.registry, name=secret_name)
        except RegistryError as exc:
            raise Problem(Reason.INVALID_PUSH_SECRET, f"spec.output.pushSecret: {exc}") from exc

    def secret_values(self, servicebuild: ServiceBuild) -> list[str]:
        """The values of every Secret the spec hands to the build (a Secret gone since is skipped)."""
        spec, namespace = servicebuild.spec, servicebuild.metadata.namespace
        git_auth = spec.source.git.auth_secret if spec.source.git else None
        names = [secret.secret_ref.name for secret in spec.secrets]
        names += [name for name in (spec.output.push_secret, git_auth) if name]
        values: list[str] = []
        for name in dict.fromkeys(names):
            values += secret_values(self.kube.get_secret_data(namespace, name) or {})
        return values

    def _git_inputs(self, meta: ObjectMeta, spec: ServiceBuildSpec, inputs: BuildInputs) -> BuildInputs:
        """The commit the Job will build (resolved now unless polling did), with the auth secret if any."""
        git = spec.source.git
        if git is None:
            return inputs
        credentials, _ = self._git_credentials(meta, spec)
        if git.auth_secret is not None:
            data = self._secret_data(meta, "spec.source.git.authSecret", git.auth_secret, ())
            method: GitAuth = (
                "ssh" if "ssh-privatekey" in data else "token" if "token" in data else "password"
            )
            inputs = replace(inputs, git_auth=method)
        commit = inputs.commit or self._resolve(git.url, git.revision, credentials)
        return replace(inputs, commit=commit)

    def _git_credentials(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> tuple[GitCredentials | None, str]:
        """The auth Secret's credentials, and their fingerprint; (None, "") without one."""
        git = spec.source.git
        if git is None or git.auth_secret is None:
            return None, ""
        data = self._secret_data(meta, "spec.source.git.authSecret", git.auth_secret, ())
        try:
            credentials = git_credentials_from_secret(data)
        except GitError as exc:
            raise Problem(exc.reason, f"spec.source.git.authSecret: {exc}") from exc
        return credentials, credentials_fingerprint(git.auth_secret, data)

    def _resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str:
        """One lookup of the remote, at the pace its host allows."""
        with contextlib.suppress(ValueError):  # not a URL the git gateway reads: it says so itself
            self.pace.wait(parse_git_url(url).host.lower())
        try:
            return self.git.resolve(url, revision, credentials)
        except GitError as exc:
            if exc.transient:
                raise
            raise Problem(exc.reason, f"spec.source.git: {exc}") from exc

    def _secret_data(self, meta: ObjectMeta, field: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        data = self.kube.get_secret_data(meta.namespace, name)
        if data is None:
            raise Problem(
                Reason.SECRET_NOT_FOUND, f"{field}: Secret {name!r} does not exist in {meta.namespace}."
            )
        missing = [key for key in keys if key not in data]
        if missing:
            raise Problem(Reason.SECRET_NOT_FOUND, f"{field}: Secret {name!r} has no key {missing[0]!r}.")
        return data


def _decoded(encoded: str, field: str) -> bytes:
    """A Secret's value as the API gives it (base64)."""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Problem(Reason.SECRET_NOT_FOUND, f"{field}: a Secret's value is not base64.") from exc
