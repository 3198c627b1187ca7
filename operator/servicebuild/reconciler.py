"""Observe, act, decide: one level-triggered reconcile behind every trigger. No Kopf here."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from servicebuild import naming
from servicebuild.admission import BuildSlots
from servicebuild.api.models import (
    BuildOutput,
    ObjectMeta,
    Phase,
    PlatformOutput,
    QueueStatus,
    ServiceBuild,
    ServiceBuildSpec,
    ServiceBuildStatus,
    SourceStatus,
    status_to_dict,
)
from servicebuild.config import Settings
from servicebuild.credentials import (
    Credentials,
    GitCredentials,
    git_credentials_from_secret,
    push_credentials,
    secret_values,
)
from servicebuild.failures import scrub
from servicebuild.gitremote import GitError
from servicebuild.imageref import ImageRef
from servicebuild.kube import KubeError
from servicebuild.observe import BuildState, Observation, PendingLimit, is_finished, observe
from servicebuild.registry import ImageSummary, RegistryError
from servicebuild.render.job import BuildInputs, GitAuth, render_job
from servicebuild.status import Outcome, decide, human_size, merge_patch, transition_event
from servicebuild.validation import describe_validation_error

logger = logging.getLogger(__name__)

_FINAL_PHASES = {Phase.SUCCEEDED, Phase.FAILED}
_DOCKER_CONFIG_KEY = ".dockerconfigjson"
_MAX_RETRY_DELAY_SECONDS = 600


class KubeGateway(Protocol):
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, job: dict[str, Any]) -> bool: ...
    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def get_job_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None: ...
    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def patch_servicebuild_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def post_event(
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: str
    ) -> None: ...


class RegistryGateway(Protocol):
    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary: ...


class GitGateway(Protocol):
    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str: ...


@dataclass(frozen=True)
class Result:
    """What one reconcile did."""

    status: ServiceBuildStatus
    written: bool


@dataclass(frozen=True)
class _Target:
    """What one build is for: the object, its parsed spec, and the ConfigMap context's digest."""

    meta: ObjectMeta
    spec: ServiceBuildSpec
    digest: str | None
    others_stopped: bool = False
    """An earlier reconcile of this same build already stopped the Jobs of other generations and
    contexts (it wrote the status only after that), so they need no listing again."""


class _PermanentError(Exception):
    """A problem only a change of the spec or of the objects it names can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _previous_status(raw: Any) -> ServiceBuildStatus:
    """The stored status; a status the operator cannot read is treated as empty and rewritten."""
    try:
        return ServiceBuildStatus.model_validate(raw or {})
    except ValidationError:
        return ServiceBuildStatus()


def _later(now: str, seconds: int) -> str:
    return (datetime.fromisoformat(now) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact_time(now: str) -> str:
    """`2026-11-28T10:15:00Z` → `20261128101500`: a sortable tag fragment."""
    return "".join(character for character in now if character.isdigit())[:14]


class Reconciler:
    """Brings one ServiceBuild one step closer to built, through the gateways it was given."""

    def __init__(
        self,
        kube: KubeGateway,
        registry: RegistryGateway,
        git: GitGateway,
        settings: Settings,
        slots: BuildSlots | None = None,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.git = git
        self.settings = settings
        self.slots = slots or BuildSlots(
            settings.max_running_builds, settings.max_running_builds_per_namespace
        )

    def reconcile(self, body: Mapping[str, Any], now: str) -> Result:
        """Raise KubeError, RegistryError or GitError (transient ones) to be retried later."""
        meta = ObjectMeta.model_validate(body["metadata"])
        result = self._reconcile(meta, body, now)
        if result.status.queue is None:
            self.slots.forget((meta.namespace, meta.name))
        return result

    def _reconcile(self, meta: ObjectMeta, body: Mapping[str, Any], now: str) -> Result:
        previous = _previous_status(body.get("status"))
        final = previous.observed_generation == meta.generation and previous.phase in _FINAL_PHASES
        try:
            spec = ServiceBuildSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            if final:
                return Result(status=previous, written=False)
            self._stop_superseded_jobs(meta, keep=None)
            invalid = describe_validation_error(exc, prefix="spec")
            return self._write(
                meta,
                previous,
                Outcome(meta.generation, Observation(BuildState.ABSENT), invalid_spec=invalid),
                now,
            )

        try:
            digest = self._context_digest(meta, spec)
        except _PermanentError as problem:
            failed = Observation(BuildState.FAILED, reason=problem.reason, message=problem.message)
            return self._write(meta, previous, Outcome(meta.generation, failed), now)
        built_digest = previous.source.context_digest if previous.source else None
        if final and built_digest == digest:
            return Result(status=previous, written=False)
        return self._write(meta, previous, self._build(_Target(meta, spec, digest), previous, now), now)

    def _write(self, meta: ObjectMeta, previous: ServiceBuildStatus, outcome: Outcome, now: str) -> Result:
        """Write the decided status when it changed, and post the Event of a transition."""
        status = decide(previous, outcome, now)
        if status == previous:
            return Result(status=status, written=False)
        patch = merge_patch(status_to_dict(previous), status_to_dict(status))
        self.kube.patch_servicebuild_status(meta.namespace, meta.name, patch)
        event = transition_event(previous, status)
        if event is not None:
            logger.info("ServiceBuild %s/%s: %s: %s", meta.namespace, meta.name, event.reason, event.message)
            try:
                self.kube.post_event(meta, event.type, event.reason, event.message, now)
            except KubeError as exc:
                logger.warning(
                    "Posting the %s event failed (the status holds the same): %s", event.reason, exc
                )
        return Result(status=status, written=True)

    def _context_digest(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> str | None:
        """The digest of a ConfigMap context: a change of the ConfigMap's data is a new build."""
        source = spec.source.config_map
        if source is None:
            return None
        configmap = self.kube.get_configmap(meta.namespace, source.name)
        if configmap is None:
            raise _PermanentError(
                "SourceNotFound", f"spec.source.configMap.name: ConfigMap {source.name!r} does not exist."
            )
        data = configmap.get("data") or {}
        binary_data = configmap.get("binaryData") or {}
        if source.archive is not None and source.archive not in binary_data:
            message = f"ConfigMap {source.name!r} has no binaryData key {source.archive!r}."
            raise _PermanentError("SourceNotFound", f"spec.source.configMap.archive: {message}")
        return naming.context_digest(data, binary_data)

    def _stop_others(self, target: _Target, keep: str | None) -> None:
        """Stop the Jobs of other generations and contexts, unless an earlier reconcile already did."""
        if not target.others_stopped:
            self._stop_superseded_jobs(target.meta, keep)

    def _stop_superseded_jobs(self, meta: ObjectMeta, keep: str | None) -> None:
        """Only the newest spec and context may push: other unfinished Jobs of this ServiceBuild go."""
        for job in self.kube.list_jobs(meta.namespace, meta.uid):
            labels = job.get("metadata", {}).get("labels") or {}
            name = job["metadata"]["name"]
            if labels.get(naming.LABEL_UID) == meta.uid and name != keep and not is_finished(job):
                logger.info("Deleting superseded build Job %s/%s", meta.namespace, name)
                self.kube.delete_job(meta.namespace, name)
                self.slots.finished(meta.namespace, name)

    def _build(self, target: _Target, previous: ServiceBuildStatus, now: str) -> Outcome:
        """The current attempt at this generation and context: continue it, retry it, or start it."""
        same_build = previous.observed_generation == target.meta.generation and (
            (previous.source.context_digest if previous.source else None) == target.digest
        )
        attempt = (previous.attempt or 1) if same_build else 1
        since = previous.queue.since if previous.queue else now
        started_before = previous.job_name is not None or previous.queue is not None
        return self._attempt(
            replace(target, others_stopped=same_build and started_before), attempt, since, now
        )

    def _attempt(self, target: _Target, attempt: int, since: str, now: str) -> Outcome:
        meta, spec = target.meta, target.spec
        job_name = naming.job_name(meta.name, meta.uid, meta.generation, target.digest, attempt)
        source = SourceStatus(context_digest=target.digest) if target.digest else None
        outcome = Outcome(meta.generation, Observation(BuildState.ABSENT), source=source, attempt=attempt)
        job = self.kube.get_job(meta.namespace, job_name)
        if job is None:
            return self._admit_and_start(target, job_name, since, now, outcome)
        self._stop_others(target, keep=job_name)
        # The Pod, whatever the Job's counters say: its build container ends seconds before the Job does.
        suspended = bool(job.get("spec", {}).get("suspend"))
        pod = None if suspended else self.kube.get_job_pod(meta.namespace, job_name)
        observation = observe(job, pod, PendingLimit(now=now, seconds=spec.pending_timeout_seconds))
        if observation.state == BuildState.FAILED and (observation.log_tail or observation.message):
            observation = self._scrubbed(target, observation)
        if observation.state in {BuildState.SUCCEEDED, BuildState.FAILED}:
            self.slots.finished(meta.namespace, job_name)
        if observation.reason == "PendingTimeout":
            # A Pod that cannot start holds its quota and would start late and unexpected: stop it.
            self.kube.delete_job(meta.namespace, job_name)
            self.slots.finished(meta.namespace, job_name)
        outcome = replace(outcome, observation=observation, source=self._source(observation) or source)
        if observation.state == BuildState.FAILED and observation.transient:
            return self._retry(target, outcome, now)
        if observation.state != BuildState.SUCCEEDED or observation.report is None:
            return outcome
        try:
            output = self._read_back(meta, spec, observation)
        except _PermanentError as problem:
            failed = replace(
                observation, state=BuildState.FAILED, reason=problem.reason, message=problem.message
            )
            return replace(outcome, observation=failed)
        return replace(outcome, output=output)

    def _retry(self, target: _Target, failed: Outcome, now: str) -> Outcome:
        """A transient failure: the next attempt after a growing delay, until the attempts run out."""
        max_attempts = self.settings.max_build_attempts
        failed = replace(failed, max_attempts=max_attempts)
        if failed.attempt >= max_attempts:
            return failed
        delay = min(self.settings.retry_delay_seconds * 2 ** (failed.attempt - 1), _MAX_RETRY_DELAY_SECONDS)
        retry_at = _later(failed.observation.completion_time or now, delay)
        if now < retry_at:
            return replace(failed, retry_at=retry_at)
        meta = target.meta
        logger.info("Retrying ServiceBuild %s/%s: attempt %d", meta.namespace, meta.name, failed.attempt + 1)
        return replace(self._attempt(target, failed.attempt + 1, now, now), max_attempts=max_attempts)

    def _admit_and_start(
        self, target: _Target, job_name: str, since: str, now: str, outcome: Outcome
    ) -> Outcome:
        """Start the Job when a build slot is free, else wait in the queue."""
        meta = target.meta
        decision = self.slots.request((meta.namespace, meta.name), job_name, since)
        if not decision.admitted:
            self._stop_others(target, keep=None)
            waiting = QueueStatus(position=decision.position, since=since)
            return replace(outcome, waiting=waiting, waiting_reason=decision.reason)
        try:
            observation = self._start(target, job_name, outcome.attempt, now)
        except _PermanentError as problem:
            self.slots.finished(meta.namespace, job_name)
            # The older build must not push either: the spec that asked for it is gone.
            self._stop_others(target, keep=None)
            failed = Observation(BuildState.FAILED, reason=problem.reason, message=problem.message)
            return replace(outcome, observation=failed)
        except (KubeError, RegistryError, GitError):
            self.slots.finished(meta.namespace, job_name)
            raise
        self._stop_others(target, keep=job_name)
        return replace(outcome, observation=observation, source=self._source(observation) or outcome.source)

    @staticmethod
    def _source(observation: Observation) -> SourceStatus | None:
        if observation.commit is None and observation.context_digest is None:
            return None
        return SourceStatus(commit=observation.commit, context_digest=observation.context_digest)

    def _start(self, target: _Target, job_name: str, attempt: int, now: str) -> Observation:
        """Check what the build needs, resolve the source, and create the Job."""
        meta, spec, digest = target.meta, target.spec, target.digest
        if spec.builder_image is not None and spec.builder_image not in self.settings.allowed_builder_images:
            raise _PermanentError(
                "InvalidSpec",
                f"spec.builderImage: {spec.builder_image!r} is not an image the operator allows"
                " (SERVICEBUILD_ALLOWED_BUILDER_IMAGES).",
            )
        self._check_push_registries(meta, spec)
        if spec.output.push_secret is not None:
            self._secret_data(meta, "spec.output.pushSecret", spec.output.push_secret, (_DOCKER_CONFIG_KEY,))
        for index, secret in enumerate(spec.secrets):
            field = f"spec.secrets[{index}].secretRef"
            self._secret_data(meta, field, secret.secret_ref.name, (secret.secret_ref.key,))
        inputs = self._git_inputs(
            meta, spec, BuildInputs(timestamp=_compact_time(now), context_digest=digest, attempt=attempt)
        )
        try:
            job = render_job(ServiceBuild(metadata=meta, spec=spec), self.settings, inputs)
        except ValueError as exc:
            # What the schema cannot know before the source resolved, e.g. a tag too long once expanded.
            raise _PermanentError("InvalidSpec", str(exc)) from exc
        try:
            self.kube.create_job(job)
        except KubeError as exc:
            if exc.transient:
                raise
            raise _PermanentError("JobRejected", f"The API server rejected the build Job: {exc}") from exc
        logger.info("Created build Job %s/%s", meta.namespace, job_name)
        return Observation(BuildState.PENDING, job_name=job_name, commit=inputs.commit, context_digest=digest)

    def _check_push_registries(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> None:
        """A platform team may pin each namespace to its registries (SERVICEBUILD_ALLOWED_PUSH_REGISTRIES)."""
        allowed = self.settings.push_registries_of(meta.namespace)
        if allowed is None:
            return
        targets = [("spec.output.image", spec.output.ref.registry)]
        if not spec.cache.disabled:
            targets.append(("spec.cache.ref", spec.cache_ref.registry))
        for field, registry in targets:
            if registry not in allowed:
                listed = ", ".join(sorted(allowed)) or "none"
                raise _PermanentError(
                    "RegistryNotAllowed",
                    f"{field}: builds in namespace {meta.namespace!r} may not push to {registry!r}"
                    f" (allowed: {listed}).",
                )

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
                raise _PermanentError(exc.reason, f"spec.source.git.authSecret: {exc}") from exc
            method: GitAuth = (
                "ssh" if "ssh-privatekey" in data else "token" if "token" in data else "password"
            )
            inputs = replace(inputs, git_auth=method)
        try:
            commit = self.git.resolve(git.url, git.revision, credentials)
        except GitError as exc:
            if exc.transient:
                raise
            raise _PermanentError(exc.reason, f"spec.source.git: {exc}") from exc
        return replace(inputs, commit=commit)

    def _scrubbed(self, target: _Target, observation: Observation) -> Observation:
        """The failure without any value of the Secrets the build used: a build log may echo one."""
        values = self._secret_values(target)
        return replace(
            observation,
            message=scrub(observation.message, values) if observation.message else observation.message,
            log_tail=scrub(observation.log_tail, values) if observation.log_tail else observation.log_tail,
            failed_step=scrub(observation.failed_step, values) if observation.failed_step else None,
        )

    def _secret_values(self, target: _Target) -> list[str]:
        """The values of every Secret the spec hands to the build (a Secret gone since is skipped)."""
        spec, namespace = target.spec, target.meta.namespace
        git_auth = spec.source.git.auth_secret if spec.source.git else None
        names = [secret.secret_ref.name for secret in spec.secrets]
        names += [name for name in (spec.output.push_secret, git_auth) if name]
        values: list[str] = []
        for name in dict.fromkeys(names):
            values += secret_values(self.kube.get_secret_data(namespace, name) or {})
        return values

    def _secret_data(self, meta: ObjectMeta, field: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        data = self.kube.get_secret_data(meta.namespace, name)
        if data is None:
            raise _PermanentError(
                "SecretNotFound", f"{field}: Secret {name!r} does not exist in {meta.namespace}."
            )
        missing = [key for key in keys if key not in data]
        if missing:
            raise _PermanentError("SecretNotFound", f"{field}: Secret {name!r} has no key {missing[0]!r}.")
        return data

    def _credentials(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> Credentials | None:
        secret_name = spec.output.push_secret
        if secret_name is None:
            return None
        data = self._secret_data(meta, "spec.output.pushSecret", secret_name, (_DOCKER_CONFIG_KEY,))
        try:
            return push_credentials(data, spec.output.ref.registry, name=secret_name)
        except RegistryError as exc:
            raise _PermanentError("InvalidPushSecret", f"spec.output.pushSecret: {exc}") from exc

    def _read_back(self, meta: ObjectMeta, spec: ServiceBuildSpec, observation: Observation) -> BuildOutput:
        """Confirm the pushed digest in the registry and measure the image as the registry serves it."""
        report = observation.report
        if report is None:
            raise ValueError("reading back needs the build report")
        image = spec.output.ref
        try:
            summary = self.registry.inspect(image, report.digest, self._credentials(meta, spec))
        except RegistryError as exc:
            if exc.transient:
                raise
            raise _PermanentError(type(exc).__name__, f"Reading the pushed image back failed: {exc}") from exc
        platforms = [
            PlatformOutput(platform=p.platform, digest=p.digest, size_bytes=p.size_bytes, layers=p.layers)
            for p in summary.platforms
        ]
        tags = report.image_name.split(",") if report.image_name else [str(image)]
        return BuildOutput(
            image=image.with_digest(summary.digest),
            digest=summary.digest,
            size_bytes=summary.size_bytes,
            size=human_size(summary.size_bytes),
            layers=summary.layers,
            generation=meta.generation,
            platforms=platforms or None,
            tags=tags,
        )
