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

from servicebuild import cachemiss, imagehistory, naming, plan, sizebudget
from servicebuild.admission import BuildSlots, Claim, Idle, Key, Running, Waiting, Waves
from servicebuild.api.models import (
    GROUP,
    KIND,
    VERSION,
    BaseImage,
    BuildOutput,
    BuildResult,
    CacheInputs,
    FirstMiss,
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
    Credentials,
)
from servicebuild.failures import Failure, Reason
from servicebuild.findings import blocking_failure, with_build_checks
from servicebuild.gitremote import ContextTree, GitError
from servicebuild.imagehistory import LayerBreakdown
from servicebuild.imageref import ImageRef, parse_image
from servicebuild.inputs import GitGateway, InputReader, Problem
from servicebuild.jobs import BuildJob, BuildPod, parse_job, parse_pod
from servicebuild.kube import KubeError
from servicebuild.manifests import ImageSummary
from servicebuild.metrics import OperatorMetrics
from servicebuild.naming import ANNOTATION_REQUESTED_AT
from servicebuild.observe import BuildState, Observation, PendingLimit, observe, without_secrets
from servicebuild.plan import DueBuild, ReadBack, Report, StartJob, StartNextAttempt, Wanted
from servicebuild.poolbuilds import PoolBuilds, RunGateway
from servicebuild.registry import RegistryError
from servicebuild.render.job import BUILD_CONTAINER, BuildInputs, render_job, tags_after_budget
from servicebuild.render.pool_run import Builder
from servicebuild.report_budget import BuildFacts, merge_facts, parse_log_facts
from servicebuild.status import (
    DEFAULT_HISTORY,
    Build,
    ConditionValue,
    InProgress,
    Outcome,
    Progress,
    Queued,
    RetryScheduled,
    Stalled,
    Succeeded,
    budget_event,
    decide,
    merge_patch,
    output_record,
    transition_event,
)
from servicebuild.times import compact_time

logger = logging.getLogger(__name__)

WAVE_REASON = (
    "builds started by a new commit or base image start in waves"
    " (SERVICEBUILD_MAX_TRIGGERED_BUILDS_PER_MINUTE)"
)


def log_fields(
    namespace: str, name: str, *, build: int | None = None, reason: str | None = None
) -> dict[str, object]:
    """What a log line about a ServiceBuild carries as fields, for SERVICEBUILD_LOG_FORMAT=json: the object
    as Kopf's own lines name it (`object`), the build's number and the reason, when known."""
    fields: dict[str, object] = {
        "k8s_ref": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": namespace, "name": name}
    }
    if build is not None:
        fields["build"] = build
    if reason is not None:
        fields["reason"] = reason
    return fields


class KubeGateway(Protocol):
    def get_builderpool(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_own_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, job: dict[str, Any]) -> bool: ...
    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def get_job_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None: ...
    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str | None: ...
    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def patch_servicebuild_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def post_event(
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: datetime
    ) -> None: ...


class RegistryGateway(Protocol):
    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary: ...
    def tag_digest(self, image: ImageRef, credentials: Credentials | None) -> str: ...
    def manifest_and_config(
        self, image: ImageRef, digest: str, credentials: Credentials | None
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...
    def tag(self, image: ImageRef, digest: str, credentials: Credentials | None) -> None: ...


@dataclass(frozen=True)
class Result:
    """What one reconcile did, and which waiting ServiceBuilds a build slot it freed lets start."""

    status: ServiceBuildStatus
    written: bool
    wake: tuple[Key, ...] = ()
    recheck_at: datetime | None = None
    """When to reconcile again whatever happens: a retry, the next poll, the next wave."""


class Reconciler:
    """Brings one ServiceBuild one step closer to built, through the gateways it was given."""

    def __init__(  # noqa: PLR0913 - three gateways, the runs, the settings, the operator's namespace
        self,
        kube: KubeGateway,
        registry: RegistryGateway,
        git: GitGateway,
        settings: Settings,
        *,
        runs: RunGateway,
        own_namespace: str = "default",
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.inputs = InputReader(kube, git, settings)
        self.pools = PoolBuilds(kube, runs, self.inputs, settings, own_namespace)
        self.settings = settings
        self.slots = BuildSlots(settings.max_running_builds, settings.max_running_builds_per_namespace)
        self.waves = Waves(settings.max_triggered_builds_per_minute)
        self.metrics = OperatorMetrics(self._load)

    def reconcile(self, servicebuild: ServiceBuild | InvalidServiceBuild, now: datetime) -> Result:
        """Raise KubeError, RegistryError or GitError (transient ones) to be retried later."""
        meta, previous = servicebuild.metadata, servicebuild.status
        if isinstance(servicebuild, InvalidServiceBuild):
            wanted, outcome = None, self._invalid(servicebuild)
        else:
            wanted, outcome = self._wanted_and_outcome(servicebuild, now)
        limit = servicebuild.spec.history_limit if isinstance(servicebuild, ServiceBuild) else DEFAULT_HISTORY
        result = (
            Result(previous, written=False)
            if outcome is None
            else self._write(meta, outcome, previous, now, history_limit=limit)
        )
        if result.written:
            self.metrics.status_written(meta.namespace, previous, result.status, _cache_ratio(outcome))
        self.metrics.servicebuild_seen(meta.key, result.status)
        if result.written and isinstance(outcome, Succeeded | Stalled) and outcome.build.job_name:
            self._retain_jobs(meta, outcome.build.job_name, ended_well=isinstance(outcome, Succeeded))
        claim = _claim(outcome)
        wake = self.slots.update(meta.key, claim).wake if claim is not None else ()
        return replace(result, wake=wake, recheck_at=_recheck_at(outcome, wanted, now))

    def forget(self, key: Key) -> tuple[Key, ...]:
        """The ServiceBuild is gone: its build on a pool stops, its build slot or queue place is free;
        returns whom that lets start."""
        self.pools.stop(key, keep=None)
        self.metrics.forget(key)
        return self.slots.update(key, Idle()).wake

    def _load(self) -> dict[str, tuple[int, int]]:
        """The current term's build slots' load, for the gauges (the slots change with each term)."""
        return self.slots.load()

    def end_term(self) -> None:
        """Stop the builds on pools and forget the build slots and waves: another replica leads now (it
        starts the pools' builds again, and its gauges count them)."""
        self.pools.runs.stop_all()
        self.slots = BuildSlots(
            self.settings.max_running_builds, self.settings.max_running_builds_per_namespace
        )
        self.waves = Waves(self.settings.max_triggered_builds_per_minute)

    def begin_term(self, jobs: list[dict[str, Any]]) -> None:
        """Start afresh from the builds that run now (when this replica begins to lead, before any
        ServiceBuild may start one): an earlier term's build slots and waves may be out of date."""
        self.end_term()
        for job in map(parse_job, jobs):
            if job.servicebuild is not None and not job.finished:
                self.slots.update((job.namespace, job.servicebuild), Running(job.name))

    def base_image_changes(self, servicebuilds: list[ServiceBuild]) -> list[Key]:
        """Ask the registries for the digest each base image's tag has now, once per reference and
        credentials however many ServiceBuilds use it; return the ServiceBuilds following their base images
        whose last build used another digest. An image the registry cannot answer for is skipped."""
        following = [sb for sb in servicebuilds if sb.spec.triggers.base_images and sb.status.base_images]
        checked: set[tuple[str, str]] = set()
        changed = []
        for servicebuild in following:
            fingerprint = self.inputs.push_fingerprint(servicebuild)
            for image in servicebuild.status.base_images or ():
                if (image.ref, fingerprint) in checked:
                    continue
                checked.add((image.ref, fingerprint))
                digest = self._tag_digest(servicebuild, image.ref)
                if digest is not None:
                    self.inputs.base_images.set(image.ref, fingerprint, digest)
            if set(self.inputs.latest_base_images(servicebuild) or ()) != set(
                servicebuild.status.base_images or ()
            ):
                changed.append(servicebuild.metadata.key)
        return changed

    def _tag_digest(self, servicebuild: ServiceBuild, ref: str) -> str | None:
        try:
            image = parse_image(ref)
            return self.registry.tag_digest(
                image, self.inputs.push_credentials(servicebuild.metadata, servicebuild.spec)
            )
        except (ValueError, Problem, RegistryError) as exc:
            logger.warning("Checking base image %s failed: %s", ref, exc)
            return None

    def tracked(self) -> set[Key]:
        """The ServiceBuilds holding a build slot or waiting for one."""
        return self.slots.present()

    # 2-4: observe, decide what is due, act

    def _invalid(self, servicebuild: InvalidServiceBuild) -> Outcome | None:
        """Stalled naming the fields the model rejects; nothing to do once that is written."""
        meta, previous = servicebuild.metadata, servicebuild.status
        if plan.ended(previous, meta.generation):
            return None
        self._stop_builds(meta, keep=None)
        return Stalled(Build(meta.generation), Failure(Reason.INVALID_SPEC, servicebuild.problem))

    def _wanted_and_outcome(
        self, servicebuild: ServiceBuild, now: datetime
    ) -> tuple[Wanted | None, Outcome | None]:
        """What the spec and its sources ask for, and what became of the build that is due (None: nothing
        is due)."""
        meta, previous = servicebuild.metadata, servicebuild.status
        try:
            wanted = self._wanted(servicebuild, now)
        except Problem as problem:
            # The older build must not push either: the spec that asked for it is gone.
            self._stop_builds(meta, keep=None, unless_stopped=plan.ended(previous, meta.generation))
            return None, Stalled(Build(meta.generation), problem.failure)
        due = plan.due_build(meta, previous, wanted, now)
        return wanted, None if due is None else self._follow(servicebuild, due, now)

    def _wanted(self, servicebuild: ServiceBuild, now: datetime) -> Wanted:
        """The spec's generation and the state of every source it follows: the ConfigMap's content, the
        newest commit of a polled revision, the base images' digests, a rebuild request."""
        meta = servicebuild.metadata
        polled = self.inputs.polled_commit(servicebuild, now)
        return Wanted(
            generation=meta.generation,
            context_digest=self.inputs.context_digest(meta, servicebuild.spec),
            commit=polled.commit if polled else None,
            next_poll=polled.next_poll if polled else None,
            base_images=self.inputs.latest_base_images(servicebuild),
            request=meta.annotations.get(ANNOTATION_REQUESTED_AT),
        )

    def _follow(self, servicebuild: ServiceBuild, due: DueBuild, now: datetime) -> Outcome:
        """Observe the due build's Job and take its next step."""
        meta = servicebuild.metadata
        observation = self._observe(servicebuild, due, now)
        if observation.state == BuildState.FAILED:
            # A build log may echo a Secret's value: the status must not.
            observation = without_secrets(observation, self.inputs.secret_values(servicebuild))
        match plan.next_step(due, observation, self.settings, now):
            case StartJob():
                return self._start(servicebuild, due, now)
            case StartNextAttempt():
                logger.info(
                    "Retrying ServiceBuild %s/%s: attempt %d",
                    meta.namespace,
                    meta.name,
                    due.attempt + 1,
                    extra=log_fields(meta.namespace, meta.name, build=due.number),
                )
                return self._follow(servicebuild, plan.next_attempt(meta, due, now), now)
            case ReadBack():
                return self._read_back(servicebuild, plan.observed_build(due, observation), observation)
            case Report(outcome, stop_job):
                if stop_job:
                    self.kube.delete_job(meta.namespace, due.job_name)
                return outcome

    def _observe(self, servicebuild: ServiceBuild, due: DueBuild, now: datetime) -> Observation:
        """What the due build's Job (and Pod), or its run on the pool, say now; other builds stop once it
        exists."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        if spec.builder_pool is not None:
            observation = self.pools.observe(due.job_name)
        else:
            job, pod = self._observe_job(meta, due.job_name)
            observation = observe(
                job, pod, PendingLimit(now, timedelta(seconds=spec.pending_timeout_seconds))
            )
        if observation.state != BuildState.ABSENT:
            self._stop_builds(meta, keep=due.job_name, unless_stopped=due.others_stopped)
        return observation

    def _checked(self, servicebuild: ServiceBuild, due: DueBuild) -> Build:
        """The due build with the commit it will build (a git revision resolved once: a queued build keeps it
        in its status) and its Dockerfile findings: those its status already holds while it waits (a queued
        build is reconciled again and again), else its context analysed once."""
        commit = self.inputs.commit_to_build(servicebuild, due.commit)
        build = due.build if commit is None else replace(due.build, source=SourceStatus(commit=commit))
        previous = servicebuild.status
        if previous.build == due.number and previous.findings is not None:
            return replace(build, findings=tuple(previous.findings))
        return replace(build, findings=self.inputs.dockerfile_findings(servicebuild, commit))

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
        meta, spec = servicebuild.metadata, servicebuild.spec
        try:
            checked = self._checked(servicebuild, due)
        except Problem as problem:
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Stalled(due.build, problem.failure, max_attempts=self.settings.max_build_attempts)
        blocked = blocking_failure(checked.findings or (), spec.checks, spec.dockerfile)
        if blocked is not None:
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Stalled(checked, blocked)
        capacity = self._capacity(servicebuild, due, checked, now)
        if capacity is not None and not isinstance(capacity, Builder):
            return capacity
        builder = capacity
        try:
            seed = BuildInputs(
                timestamp=compact_time(now),
                context_digest=due.context_digest,
                attempt=due.attempt,
                build=due.number,
                trigger=due.trigger,
                commit=checked.source.commit if checked.source else None,
            )
            inputs = self.inputs.build_inputs(servicebuild, seed)
            if builder is None:
                self._create_job(servicebuild, inputs, due.number)
            else:
                self.pools.start(servicebuild, due.job_name, inputs, builder)
        except Problem as problem:
            # The older build must not push either: the spec that asked for it is gone.
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Stalled(checked, problem.failure, max_attempts=self.settings.max_build_attempts)
        except (KubeError, RegistryError, GitError):
            self.slots.update(meta.key, Idle())
            raise
        self.metrics.job_created(due.since, now)
        self._stop_builds(meta, keep=due.job_name, unless_stopped=due.others_stopped)
        source = SourceStatus(commit=inputs.commit, context_digest=inputs.context_digest)
        build = replace(
            checked,
            job_name=due.job_name,
            source=source if inputs.commit or inputs.context_digest else None,
        )
        return InProgress(build, Progress.POD_PENDING if builder is None else Progress.RUNNING)

    def _capacity(
        self, servicebuild: ServiceBuild, due: DueBuild, checked: Build, now: datetime
    ) -> Builder | Outcome | None:
        """The build's turn in a wave, its builder pool, a build slot: what waiting for one of them says,
        else the pool to build on (None: build in a Job)."""
        meta, spec = servicebuild.metadata, servicebuild.spec
        wave = self.waves.admit(now) if due.trigger in plan.TRIGGERED else None
        if wave is not None:
            return Queued(checked, 1, due.since, WAVE_REASON, until=wave)
        builder = self.pools.builder(meta, spec.builder_pool) if spec.builder_pool is not None else None
        if isinstance(builder, str):
            self._stop_builds(meta, keep=due.job_name, unless_stopped=due.others_stopped)
            timeouts = (spec.pending_timeout_seconds, now)
            return self.pools.waiting(meta.key, due.job_name, checked, builder, timeouts)
        answer = self.slots.update(meta.key, Waiting(due.job_name, due.since))
        if not answer.admitted:
            self._stop_builds(meta, keep=None, unless_stopped=due.others_stopped)
            return Queued(checked, answer.position, due.since, answer.reason)
        return builder

    def _create_job(self, servicebuild: ServiceBuild, inputs: BuildInputs, number: int) -> None:
        meta = servicebuild.metadata
        try:
            job = render_job(servicebuild, self.settings, inputs)
        except ValueError as exc:
            # What the schema cannot know before the source resolved, e.g. a tag too long once expanded.
            raise Problem(Reason.INVALID_SPEC, str(exc)) from exc
        try:
            self.kube.create_job(job)
        except KubeError as exc:
            if exc.transient:
                raise
            raise Problem(Reason.JOB_REJECTED, f"The API server rejected the build Job: {exc}") from exc
        logger.info(
            "Created build Job %s/%s",
            meta.namespace,
            job["metadata"]["name"],
            extra=log_fields(meta.namespace, meta.name, build=number),
        )

    def _read_back(self, servicebuild: ServiceBuild, build: Build, observation: Observation) -> Outcome:
        """Confirm the pushed digest in the registry and measure the image as the registry serves it."""
        meta, spec, report = servicebuild.metadata, servicebuild.spec, observation.report
        if report is None:  # a succeeded observation always carries its report
            raise ValueError("reading back needs the build report")
        try:
            credentials = self.inputs.push_credentials(meta, spec)
            summary = self.registry.inspect(spec.output.ref, report.digest, credentials)
        except Problem as problem:
            return Stalled(build, problem.failure, completion_time=observation.completion_time)
        except RegistryError as exc:
            if exc.transient:
                raise
            failure = Failure(type(exc).__name__, f"Reading the pushed image back failed: {exc}")
            return Stalled(build, failure, completion_time=observation.completion_time)
        context = self.inputs.context_files(meta, spec, observation.context_digest)
        commit = build.source.commit if build.source else None
        git_context = self.inputs.git_context(servicebuild, commit) if commit else None
        dockerfile_context = context if git_context is None else git_context.files
        layers = self._layers(spec.output.ref, summary, credentials, _instructions(spec, dockerfile_context))
        output = output_record(
            spec.output.ref,
            summary,
            report,
            meta.generation,
            layers=layers,
            provenance=observation.provenance,
        )
        facts = self._all_facts(meta, observation)
        base_images = tuple(
            dict.fromkeys(BaseImage(ref=image.ref, digest=image.digest) for image in facts.base_images)
        )
        findings = with_build_checks(servicebuild.status.findings or (), facts.warnings, spec.checks)
        build = replace(build, findings=findings)
        within_budget, over_budget = self._size_budget(spec, output, servicebuild.status.output, credentials)
        if over_budget is not None:
            return Stalled(build, over_budget, completion_time=observation.completion_time)
        inputs = cachemiss.cache_inputs(context, spec.build_args)
        git_trees = self._git_trees(servicebuild, git_context) if facts.first_miss else None
        return Succeeded(
            build,
            output,
            report,
            observation.completion_time,
            base_images=base_images,
            first_miss=_first_miss(servicebuild.status, facts.first_miss, inputs, base_images, git_trees),
            cache_inputs=inputs,
            size_budget=within_budget,
        )

    def _git_trees(self, servicebuild: ServiceBuild, built: ContextTree | None) -> cachemiss.GitTrees | None:
        """The blob ids of the git context at the last successful build's commit and of `built` (this
        build's); None for a first build or a context not read."""
        last = next(
            (
                record.commit
                for record in servicebuild.status.history or ()
                if record.result == BuildResult.SUCCEEDED
            ),
            None,
        )
        before = self.inputs.git_context(servicebuild, last) if built is not None and last else None
        return (before.blob_ids, built.blob_ids) if before is not None and built is not None else None

    def _size_budget(
        self,
        spec: ServiceBuildSpec,
        output: BuildOutput,
        previous: BuildOutput | None,
        credentials: Credentials | None,
    ) -> tuple[ConditionValue | None, Failure | None]:
        """`WithinSizeBudget` for the build's images (None without a budget) and, for a `Fail` budget, why
        the build failed: over budget, left untagged; or within it, tagged here with every reference the
        build named (a registry write, fenced as the Kubernetes writes are)."""
        budget = spec.size_budget
        if budget is None:
            return None, None
        over = sizebudget.excesses(budget, sizebudget.measured(output, previous))
        within = sizebudget.condition(budget, over)
        if not tags_after_budget(spec):
            return within, None
        if over:
            pushed = f"{spec.output.ref.name}@{output.digest}"
            message = f"{within[2]} The image was pushed as {pushed} only; its tags did not move."
            return within, Failure(Reason.SIZE_BUDGET_EXCEEDED, message)
        try:
            for reference in output.tags or [str(spec.output.ref)]:
                self.registry.tag(parse_image(reference), output.digest, credentials)
        except RegistryError as exc:
            if exc.transient:
                raise
            why = (
                f"Tagging the image within its size budget failed (the push Secret needs push rights): {exc}"
            )
            return within, Failure(type(exc).__name__, why)
        return within, None

    def _layers(
        self,
        image: ImageRef,
        summary: ImageSummary,
        credentials: Credentials | None,
        instructions: list[str] | None,
    ) -> dict[str, LayerBreakdown]:
        """Where the bytes of each image (each platform's of an index) are, from its config's history; an
        image whose history cannot be read is left out: the build succeeded all the same."""
        found = {}
        for digest in [platform.digest for platform in summary.platforms] or [summary.digest]:
            try:
                manifest, config = self.registry.manifest_and_config(image, digest, credentials)
                found[digest] = imagehistory.breakdown(config, manifest, instructions)
            except RegistryError as exc:
                if exc.transient:
                    raise
                logger.warning("Reading the layers of %s@%s failed: %s", image.name, digest, exc)
            except imagehistory.InvalidImage as exc:
                logger.warning("The layers of %s@%s are not known: %s", image.name, digest, exc)
        return found

    def _all_facts(self, meta: ObjectMeta, observation: Observation) -> BuildFacts:
        """The build's facts, those the termination message had no room for read from the end of the build
        container's log; what the message held when the log is gone."""
        facts = observation.facts or BuildFacts()
        if not facts.truncated or observation.pod_name is None:
            return facts
        log = self.kube.read_pod_log(meta.namespace, observation.pod_name, BUILD_CONTAINER, facts.log_lines)
        return merge_facts(facts, parse_log_facts(log))

    def _retain_jobs(self, meta: ObjectMeta, ended: str, *, ended_well: bool) -> None:
        """Keep the finished Jobs (and so the Pods and logs) of the last builds only, as a CronJob keeps
        them: `SERVICEBUILD_SUCCESSFUL_JOBS_HISTORY_LIMIT` and `SERVICEBUILD_FAILED_JOBS_HISTORY_LIMIT`.

        `ended` is the Job of the build that just ended, which the Job controller may not have finished yet.
        """
        jobs = sorted(map(parse_job, self.kube.list_jobs(meta.namespace, meta.uid)), key=_newest_first)
        older = [job for job in jobs if job.name != ended]
        succeeded = [*([ended] if ended_well else []), *(job.name for job in older if job.ended_well is True)]
        failed = [*([] if ended_well else [ended]), *(job.name for job in older if job.ended_well is False)]
        for name in [
            *succeeded[self.settings.successful_jobs_history_limit :],
            *failed[self.settings.failed_jobs_history_limit :],
        ]:
            self.kube.delete_job(meta.namespace, name)

    def _stop_builds(self, meta: ObjectMeta, keep: str | None, *, unless_stopped: bool = False) -> None:
        """Only the newest spec and source may push: other unfinished Jobs and pool runs of this ServiceBuild
        go."""
        self.pools.stop(meta.key, keep)
        if unless_stopped:
            return
        for job in map(parse_job, self.kube.list_jobs(meta.namespace, meta.uid)):
            if job.labels.get(naming.LABEL_UID) == meta.uid and job.name != keep and not job.finished:
                logger.info(
                    "Deleting superseded build Job %s/%s",
                    meta.namespace,
                    job.name,
                    extra=log_fields(meta.namespace, meta.name),
                )
                self.kube.delete_job(meta.namespace, job.name)

    # 5: write

    def _write(
        self,
        meta: ObjectMeta,
        outcome: Outcome,
        previous: ServiceBuildStatus,
        now: datetime,
        *,
        history_limit: int,
    ) -> Result:
        """Write the decided status when it changed, and post the Events of a transition and of a success
        over a `Warn` size budget."""
        status = decide(previous, outcome, now, history_limit)
        if status == previous:
            return Result(status=status, written=False)
        patch = merge_patch(status_to_dict(previous), status_to_dict(status))
        self.kube.patch_servicebuild_status(meta.namespace, meta.name, patch)
        for event in filter(None, (transition_event(previous, status), budget_event(previous, status))):
            fields = log_fields(meta.namespace, meta.name, build=status.build, reason=event.reason)
            logger.info(
                "ServiceBuild %s/%s: %s: %s",
                meta.namespace,
                meta.name,
                event.reason,
                event.message,
                extra=fields,
            )
            try:
                self.kube.post_event(meta, event.type, event.reason, event.message, now)
            except KubeError as exc:
                logger.warning(
                    "Posting the %s event failed (the status holds the same): %s",
                    event.reason,
                    exc,
                    extra=fields,
                )
        return Result(status=status, written=True)


POOL_RECHECK = timedelta(seconds=2)
"""How often a build waiting for its builder pool looks again (a pool's status change wakes no build)."""


def _first_miss(
    previous: ServiceBuildStatus,
    step: str | None,
    inputs: CacheInputs,
    base_images: tuple[BaseImage, ...],
    git_trees: cachemiss.GitTrees | None,
) -> FirstMiss | None:
    """The first missed step, with what changed since the last successful build (`previous`): a git
    source's files by the blob ids of `git_trees`."""
    if step is None:
        return None
    before = previous.cache.inputs if previous.cache else None
    if git_trees is not None:
        before, inputs = cachemiss.with_git_files(before, inputs, git_trees)
    return cachemiss.explain(step, before, inputs, previous.base_images or (), base_images)


def _instructions(spec: ServiceBuildSpec, context: dict[str, bytes] | None) -> list[str] | None:
    """The target stage's instructions, from the Dockerfile of the context the build used, when known."""
    dockerfile = (context or {}).get(spec.dockerfile)
    if dockerfile is None:
        return None
    return imagehistory.target_instructions(dockerfile.decode(errors="replace"), spec.target, spec.build_args)


def _claim(outcome: Outcome | None) -> Claim | None:
    """What the outcome means for the build slots; None for a queued build (its request was the claim)."""
    match outcome:
        case Queued():
            return None
        case InProgress(build=Build(job_name=str() as job_name)):
            return Running(job_name)
        case _:
            return Idle()


def _cache_ratio(outcome: Outcome | None) -> float | None:
    """Of a successful build, its cached steps over all its steps, when BuildKit reported them."""
    if not isinstance(outcome, Succeeded):
        return None
    cached, total = outcome.report.cached_steps, outcome.report.total_steps
    return cached / total if cached is not None and total else None


def _recheck_at(outcome: Outcome | None, wanted: Wanted | None, now: datetime) -> datetime | None:
    """When to reconcile again, events or not: the next retry, wave or poll, or a look at the builder pool
    waited for, whichever comes first."""
    times = [wanted.next_poll if wanted else None]
    match outcome:
        case InProgress(progress=Progress.WAITING_FOR_BUILDER):
            times.append(now + POOL_RECHECK)
        case RetryScheduled(retry_at=retry_at):
            times.append(retry_at)
        case Queued(until=until):
            times.append(until)
    return min((time for time in times if time is not None), default=None)


def _newest_first(job: BuildJob) -> tuple[int, float, str]:
    return (-job.build, -(job.created.timestamp() if job.created else 0.0), job.name)
