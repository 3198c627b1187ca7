"""What a build reads besides its spec: the ConfigMap context, the Secrets it names, the git commit its
revision resolves to. Read through the Kubernetes and git gateways; every problem a user must fix is a
`Problem` naming the spec field, every passing one a transient gateway error."""

from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from servicebuild import naming, policy
from servicebuild.api.models import ObjectMeta, ServiceBuild, ServiceBuildSpec
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
from servicebuild.gitremote import GitError
from servicebuild.registry import RegistryError
from servicebuild.render.job import BuildInputs, GitAuth
from servicebuild.times import compact_time


class SourceGateway(Protocol):
    """The part of the Kubernetes gateway that reads a build's inputs."""

    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class GitGateway(Protocol):
    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str: ...


class Problem(Exception):  # noqa: N818 - an outcome for the user to act on, not an error of the operator
    """Something only a change of the spec, or of the objects it names, can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(reason, message)


class InputReader:
    """Reads and checks what one build needs, for the reconciler."""

    def __init__(self, kube: SourceGateway, git: GitGateway, settings: Settings) -> None:
        self.kube = kube
        self.git = git
        self.settings = settings

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

    def build_inputs(
        self, servicebuild: ServiceBuild, context_digest: str | None, attempt: int, now: datetime
    ) -> BuildInputs:
        """Check what the build needs (allowlists, Secrets) and resolve its source."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        problem = policy.builder_image_problem(spec, self.settings) or policy.push_registry_problem(
            meta.namespace, spec, self.settings
        )
        if problem is not None:
            raise Problem(problem.reason, problem.message)
        if spec.output.push_secret is not None:
            self._secret_data(meta, "spec.output.pushSecret", spec.output.push_secret, (DOCKER_CONFIG_KEY,))
        for index, secret in enumerate(spec.secrets):
            field = f"spec.secrets[{index}].secretRef"
            self._secret_data(meta, field, secret.secret_ref.name, (secret.secret_ref.key,))
        inputs = BuildInputs(timestamp=compact_time(now), context_digest=context_digest, attempt=attempt)
        return self._git_inputs(meta, spec, inputs)

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
        """Resolve a git revision to the commit the Job will build, with the auth secret if any."""
        git = spec.source.git
        if git is None:
            return inputs
        credentials = None
        if git.auth_secret is not None:
            data = self._secret_data(meta, "spec.source.git.authSecret", git.auth_secret, ())
            try:
                credentials = git_credentials_from_secret(data)
            except GitError as exc:
                raise Problem(exc.reason, f"spec.source.git.authSecret: {exc}") from exc
            method: GitAuth = (
                "ssh" if "ssh-privatekey" in data else "token" if "token" in data else "password"
            )
            inputs = replace(inputs, git_auth=method)
        try:
            commit = self.git.resolve(git.url, git.revision, credentials)
        except GitError as exc:
            if exc.transient:
                raise
            raise Problem(exc.reason, f"spec.source.git: {exc}") from exc
        return replace(inputs, commit=commit)

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
