"""One level-triggered reconcile behind every trigger: observe, decide what is due, act, write. No Kopf here.

`Reconciler.reconcile` is the whole sequence, each step one call down and back:

1. parse: done once at the boundary (`parse_servicebuild`): a typed ServiceBuild, or an invalid one;
2. observe: the build context's digest, then the Job of the build that is due and its Pod;
3. decide what is due: `plan` (pure) names the build and its next step;
4. act: start the Job (checks, secrets, the git commit, a build slot), stop others, read the image back;
5. write: `status.decide` (pure) makes the whole status; it is written when it changed, with an Event
   per transition; the build slots learn what was observed.

Transient gateway errors (KubeError, RegistryError, GitError with `transient`) propagate to be retried;
everything a user must fix ends as a `Stalled` outcome.
"""

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from servicebuild import naming, plan, policy
from servicebuild.admission import BuildSlots, Claim, Idle, Key, Running, Waiting
from servicebuild.api.models import (
    InvalidServiceBuild,
    ObjectMeta,
    ServiceBuild,
    ServiceBuildSpec,
    ServiceBuildStatus,
    SourceStatus,
    status_to_dict,
)
from servicebuild.config import Settings
from servicebuild.credentials import (
    DOCKER_CONFIG_KEY,
    Credentials,
    GitCredentials,
    git_credentials_from_secret,
    push_credentials,
    secret_values,
)
from servicebuild.failures import Failure, Reason, scrub
from servicebuild.gitremote import GitError
from servicebuild.imageref import ImageRef
from servicebuild.jobs import BuildJob, BuildPod, parse_job, parse_pod
from servicebuild.kube import KubeError
from servicebuild.manifests import ImageSummary
from servicebuild.observe import BuildState, Observation, PendingLimit, observe
from servicebuild.plan import DueBuild, ReadBack, Report, StartJob, StartNextAttempt
from servicebuild.registry import RegistryError
from servicebuild.render.job import BuildInputs, GitAuth, render_job
from servicebuild.status import (
    Build,
    InProgress,
    Outcome,
    Progress,
    Queued,
    Stalled,
    Succeeded,
    decide,
    merge_patch,
    output_record,
    transition_event,
)
from servicebuild.times import compact_time

logger = logging.getLogger(__name__)


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
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: datetime
    ) -> None: ...


class RegistryGateway(Protocol):
    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary: ...


class GitGateway(Protocol):
    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str: ...


@dataclass(frozen=True)
class Result:
    """What one reconcile did, and which waiting ServiceBuilds a build slot it freed lets start."""

    status: ServiceBuildStatus
    written: bool
    wake: tuple[Key, ...] = ()


class _Problem(Exception):  # noqa: N818 - an outcome, not an error of the operator
    """Something only a change of the spec, or of the objects it names, can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(reason, message)


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

    def reconcile(self, servicebuild: ServiceBuild | InvalidServiceBuild, now: datetime) -> Result:
        """Raise KubeError, RegistryError or GitError (transient ones) to be retried later."""
        meta, previous = servicebuild.metadata, servicebuild.status
        outcome = self._outcome(servicebuild, now)
        result = (
            Result(previous, written=False) if outcome is None else self._write(meta, outcome, previous, now)
        )
        claim = _claim(outcome)
        wake = self.slots.update(meta.key, claim).wake if claim is not None else ()
        return replace(result, wake=wake)

    def forget(self, key: Key) -> tuple[Key, ...]:
        """The ServiceBuild is gone: its build slot or queue place is free; returns whom that lets start."""
        return self.slots.update(key, Idle()).wake

    def seed(self, jobs: list[dict[str, Any]]) -> None:
        """Count the builds that already run (at start-up, before any ServiceBuild may start one)."""
        for job in map(parse_job, jobs):
            if job.servicebuild is not None and not job.finished:
                self.slots.update((job.namespace, job.servicebuild), Running(job.name))

    def tracked(self) -> set[Key]:
        """The ServiceBuilds holding a build slot or waiting for one."""
        return self.slots.present()

    # 2-4: observe, decide what is due, act

    def _outcome(self, servicebuild: ServiceBuild | InvalidServiceBuild, now: datetime) -> Outcome | None:
        """What became of the build that is due; None when nothing is due."""
        meta, previous = servicebuild.metadata, servicebuild.status
        if isinstance(servicebuild, InvalidServiceBuild):
            if plan.ended(previous, meta.generation):
                return None
            self._stop_builds(meta, keep=None)
            return Stalled(Build(meta.generation), Failure(Reason.INVALID_SPEC, servicebuild.problem))
        try:
            context_digest = self._context_digest(meta, servicebuild.spec)
        except _Problem as problem:
            # The older build must not push either: the spec that asked for it is gone.
            self._stop_builds(meta, keep=None, unless_stopped=plan.ended(previous, meta.generation))
            return Stalled(Build(meta.generation), problem.failure)
        due = plan.due_build(meta, previous, context_digest, now)
        return None if due is None else self._follow(servicebuild, due, now)

    def _follow(self, servicebuild: ServiceBuild, due: DueBuild, now: datetime) -> Outcome:
        """Observe the due build's Job and take its next step."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        job, pod = self._observe_job(meta, due.job_name)
        if job is not None:
            self._stop_builds(meta, keep=due.job_name, unless_stopped=due.others_stopped)
        observation = observe(job, pod, PendingLimit(now, timedelta(seconds=spec.pending_timeout_seconds)))
        if observation.state == BuildState.FAILED:
            observation = self._without_secrets(servicebuild, observation)
        match plan.next_step(due, observation, self.settings, now):
            case StartJob():
                return self._start(servicebuild, due, now)
            case StartNextAttempt():
                logger.info(
                    "Retrying ServiceBuild %s/%s: attempt %d", meta.namespace, meta.name, due.attempt + 1
                )
                return self._follow(servicebuild, plan.next_attempt(meta, due, now), now)
            case ReadBack():
                return self._read_back(servicebuild, plan.observed_build(due, observation), observation)
            case Report(outcome, stop_job):
                if stop_job:
                    self.kube.delete_job(meta.namespace, due.job_name)
                return outcome

    def _observe_job(self, meta: ObjectMeta, job_name: str) -> tuple[BuildJob | None, BuildPod | None]:
        raw_job = self.kube.get_job(meta.namespace, job_name)
        if raw_job is None:
            return None, None
        job = parse_job(raw_job)
        # The Pod whatever the Job's counters say: its build container ends seconds before the Job does.
        pod = None if job.suspended else parse_pod(self.kube.get_job_pod(meta.namespace, job_name))
        return job, pod

    def _start(self, servicebuild: ServiceBuild, due: DueBuild, now: datetime) -> Outcome:
        """Create the due build's Job when a build slot is free, else wait in the queue."""
        meta = servicebuild.metadata
        answer = self.slots.update(meta.key, Waiting(due.job_name, due.since))
        if not answer.admitted:
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Queued(due.build, answer.position, due.since, answer.reason)
        try:
            inputs = self._inputs(servicebuild, due, now)
            self._create_job(servicebuild, inputs)
        except _Problem as problem:
            # The older build must not push either: the spec that asked for it is gone.
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Stalled(due.build, problem.failure, max_attempts=self.settings.max_build_attempts)
        except (KubeError, RegistryError, GitError):
            self.slots.update(meta.key, Idle())
            raise
        self._stop_builds(meta, keep=due.job_name, unless_stopped=due.others_stopped)
        source = SourceStatus(commit=inputs.commit, context_digest=inputs.context_digest)
        build = replace(
            due.build,
            job_name=due.job_name,
            source=source if inputs.commit or inputs.context_digest else None,
        )
        return InProgress(build, Progress.POD_PENDING)

    def _inputs(self, servicebuild: ServiceBuild, due: DueBuild, now: datetime) -> BuildInputs:
        """Check what the build needs (allowlists, Secrets) and resolve its source."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        problem = policy.builder_image_problem(spec, self.settings) or policy.push_registry_problem(
            meta.namespace, spec, self.settings
        )
        if problem is not None:
            raise _Problem(problem.reason, problem.message)
        if spec.output.push_secret is not None:
            self._secret_data(meta, "spec.output.pushSecret", spec.output.push_secret, (DOCKER_CONFIG_KEY,))
        for index, secret in enumerate(spec.secrets):
            field = f"spec.secrets[{index}].secretRef"
            self._secret_data(meta, field, secret.secret_ref.name, (secret.secret_ref.key,))
        inputs = BuildInputs(
            timestamp=compact_time(now), context_digest=due.context_digest, attempt=due.attempt
        )
        return self._git_inputs(meta, spec, inputs)

    def _create_job(self, servicebuild: ServiceBuild, inputs: BuildInputs) -> None:
        meta = servicebuild.metadata
        try:
            job = render_job(servicebuild, self.settings, inputs)
        except ValueError as exc:
            # What the schema cannot know before the source resolved, e.g. a tag too long once expanded.
            raise _Problem(Reason.INVALID_SPEC, str(exc)) from exc
        try:
            self.kube.create_job(job)
        except KubeError as exc:
            if exc.transient:
                raise
            raise _Problem(Reason.JOB_REJECTED, f"The API server rejected the build Job: {exc}") from exc
        logger.info("Created build Job %s/%s", meta.namespace, job["metadata"]["name"])

    def _read_back(self, servicebuild: ServiceBuild, build: Build, observation: Observation) -> Outcome:
        """Confirm the pushed digest in the registry and measure the image as the registry serves it."""
        meta, spec, report = servicebuild.metadata, servicebuild.spec, observation.report
        if report is None:  # a succeeded observation always carries its report
            raise ValueError("reading back needs the build report")
        try:
            credentials = self._push_credentials(meta, spec)
            summary = self.registry.inspect(spec.output.ref, report.digest, credentials)
        except _Problem as problem:
            return Stalled(build, problem.failure, completion_time=observation.completion_time)
        except RegistryError as exc:
            if exc.transient:
                raise
            failure = Failure(type(exc).__name__, f"Reading the pushed image back failed: {exc}")
            return Stalled(build, failure, completion_time=observation.completion_time)
        output = output_record(spec.output.ref, summary, report, meta.generation)
        return Succeeded(build, output, report, observation.completion_time)

    def _stop_builds(self, meta: ObjectMeta, keep: str | None, *, unless_stopped: bool = False) -> None:
        """Only the newest spec and source may push: other unfinished Jobs of this ServiceBuild go."""
        if unless_stopped:
            return
        for job in map(parse_job, self.kube.list_jobs(meta.namespace, meta.uid)):
            if job.labels.get(naming.LABEL_UID) == meta.uid and job.name != keep and not job.finished:
                logger.info("Deleting superseded build Job %s/%s", meta.namespace, job.name)
                self.kube.delete_job(meta.namespace, job.name)

    # Sources and Secrets

    def _context_digest(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> str | None:
        """The digest of a ConfigMap context: a change of the ConfigMap's data is a new build."""
        source = spec.source.config_map
        if source is None:
            return None
        configmap = self.kube.get_configmap(meta.namespace, source.name)
        if configmap is None:
            raise _Problem(
                Reason.SOURCE_NOT_FOUND,
                f"spec.source.configMap.name: ConfigMap {source.name!r} does not exist.",
            )
        data = configmap.get("data") or {}
        binary_data = configmap.get("binaryData") or {}
        if source.archive is not None and source.archive not in binary_data:
            message = f"ConfigMap {source.name!r} has no binaryData key {source.archive!r}."
            raise _Problem(Reason.SOURCE_NOT_FOUND, f"spec.source.configMap.archive: {message}")
        return naming.context_digest(data, binary_data)

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
                raise _Problem(exc.reason, f"spec.source.git.authSecret: {exc}") from exc
            method: GitAuth = (
                "ssh" if "ssh-privatekey" in data else "token" if "token" in data else "password"
            )
            inputs = replace(inputs, git_auth=method)
        try:
            commit = self.git.resolve(git.url, git.revision, credentials)
        except GitError as exc:
            if exc.transient:
                raise
            raise _Problem(exc.reason, f"spec.source.git: {exc}") from exc
        return replace(inputs, commit=commit)

    def _without_secrets(self, servicebuild: ServiceBuild, observation: Observation) -> Observation:
        """The failure without any value of the Secrets the build used: a build log may echo one."""
        failure = observation.failure
        if failure is None or not (observation.log_tail or failure.message):
            return observation
        spec, namespace = servicebuild.spec, servicebuild.metadata.namespace
        git_auth = spec.source.git.auth_secret if spec.source.git else None
        names = [secret.secret_ref.name for secret in spec.secrets]
        names += [name for name in (spec.output.push_secret, git_auth) if name]
        values: list[str] = []
        for name in dict.fromkeys(names):
            values += secret_values(self.kube.get_secret_data(namespace, name) or {})
        return replace(
            observation,
            failure=replace(
                failure,
                message=scrub(failure.message, values),
                failed_step=scrub(failure.failed_step, values) if failure.failed_step else None,
            ),
            log_tail=scrub(observation.log_tail, values) if observation.log_tail else observation.log_tail,
        )

    def _secret_data(self, meta: ObjectMeta, field: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        data = self.kube.get_secret_data(meta.namespace, name)
        if data is None:
            raise _Problem(
                Reason.SECRET_NOT_FOUND, f"{field}: Secret {name!r} does not exist in {meta.namespace}."
            )
        missing = [key for key in keys if key not in data]
        if missing:
            raise _Problem(Reason.SECRET_NOT_FOUND, f"{field}: Secret {name!r} has no key {missing[0]!r}.")
        return data

    def _push_credentials(self, meta: ObjectMeta, spec: ServiceBuildSpec) -> Credentials | None:
        secret_name = spec.output.push_secret
        if secret_name is None:
            return None
        data = self._secret_data(meta, "spec.output.pushSecret", secret_name, (DOCKER_CONFIG_KEY,))
        try:
            return push_credentials(data, spec.output.ref.registry, name=secret_name)
        except RegistryError as exc:
            raise _Problem(Reason.INVALID_PUSH_SECRET, f"spec.output.pushSecret: {exc}") from exc

    # 5: write

    def _write(
        self, meta: ObjectMeta, outcome: Outcome, previous: ServiceBuildStatus, now: datetime
    ) -> Result:
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


def _claim(outcome: Outcome | None) -> Claim | None:
    """What the outcome means for the build slots; None for a queued build (its request was the claim)."""
    match outcome:
        case Queued():
            return None
        case InProgress(build=Build(job_name=str() as job_name)):
            return Running(job_name)
        case _:
            return Idle()
