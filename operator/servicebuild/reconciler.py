"""Observe, act, decide: one level-triggered reconcile behind every trigger. No Kopf here."""

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from servicebuild import naming
from servicebuild.api.models import (
    BuildOutput,
    ObjectMeta,
    Phase,
    PlatformOutput,
    ServiceBuild,
    ServiceBuildSpec,
    ServiceBuildStatus,
    status_to_dict,
)
from servicebuild.config import Settings
from servicebuild.imageref import ImageRef
from servicebuild.kube import KubeError
from servicebuild.observe import BuildState, Observation, is_finished, observe
from servicebuild.registry import Credentials, ImageSummary, RegistryError, credentials_from_docker_config
from servicebuild.render.job import render_job
from servicebuild.status import Event, Outcome, decide, human_size, merge_patch, transition_event
from servicebuild.validation import describe_validation_error

logger = logging.getLogger(__name__)

_FINAL_PHASES = {Phase.SUCCEEDED, Phase.FAILED}
_DOCKER_CONFIG_KEY = ".dockerconfigjson"


class KubeGateway(Protocol):
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, job: dict[str, Any]) -> bool: ...
    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def get_job_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None: ...
    def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def patch_servicebuild_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def post_event(
        self, involved: ObjectMeta, event_type: str, reason: str, message: str, now: str
    ) -> None: ...


class RegistryGateway(Protocol):
    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary: ...


@dataclass(frozen=True)
class Result:
    """What one reconcile did."""

    status: ServiceBuildStatus
    written: bool
    event: Event | None = None


class _ReadbackError(Exception):
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


def _delete_superseded_jobs(kube: KubeGateway, meta: ObjectMeta) -> None:
    """Stop builds of older generations: only the newest spec may push."""
    for job in kube.list_jobs(meta.namespace, meta.uid):
        labels = job.get("metadata", {}).get("labels") or {}
        if labels.get(naming.LABEL_UID) != meta.uid or labels.get(naming.LABEL_GENERATION) == str(
            meta.generation
        ):
            continue
        if not is_finished(job):
            name = job["metadata"]["name"]
            logger.info("Deleting superseded build Job %s/%s", meta.namespace, name)
            kube.delete_job(meta.namespace, name)


def _credentials(kube: KubeGateway, meta: ObjectMeta, spec: ServiceBuildSpec) -> Credentials | None:
    secret_name = spec.output.push_secret
    if secret_name is None:
        return None
    data = kube.get_secret_data(meta.namespace, secret_name)
    if data is None or _DOCKER_CONFIG_KEY not in data:
        raise _ReadbackError(
            "PushSecretNotFound",
            f"spec.output.pushSecret: Secret {secret_name!r} with key {_DOCKER_CONFIG_KEY} is missing;"
            " the operator needs it to read the pushed image.",
        )
    try:
        config = base64.b64decode(data[_DOCKER_CONFIG_KEY], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _ReadbackError(
            "InvalidPushSecret", f"spec.output.pushSecret: {secret_name!r} is not base64"
        ) from exc
    try:
        return credentials_from_docker_config(config, spec.output.ref.registry)
    except RegistryError as exc:
        raise _ReadbackError("InvalidPushSecret", f"spec.output.pushSecret: {exc}") from exc


def _read_back(
    kube: KubeGateway, registry: RegistryGateway, meta: ObjectMeta, spec: ServiceBuildSpec, digest: str
) -> BuildOutput:
    """Confirm the pushed digest in the registry and measure the image as the registry serves it."""
    image = spec.output.ref
    try:
        summary = registry.inspect(image, digest, _credentials(kube, meta, spec))
    except RegistryError as exc:
        if exc.transient:
            raise
        raise _ReadbackError(type(exc).__name__, f"Reading the pushed image back failed: {exc}") from exc
    platforms = [
        PlatformOutput(platform=p.platform, digest=p.digest, size_bytes=p.size_bytes, layers=p.layers)
        for p in summary.platforms
    ]
    return BuildOutput(
        image=image.with_digest(summary.digest),
        digest=summary.digest,
        size_bytes=summary.size_bytes,
        size=human_size(summary.size_bytes),
        layers=summary.layers,
        generation=meta.generation,
        platforms=platforms or None,
    )


def _observe_build(
    kube: KubeGateway, registry: RegistryGateway, settings: Settings, meta: ObjectMeta, spec: ServiceBuildSpec
) -> Outcome:
    job_name = naming.job_name(meta.name, meta.uid, meta.generation)
    job = kube.get_job(meta.namespace, job_name)
    if job is None:
        try:
            kube.create_job(render_job(ServiceBuild(metadata=meta, spec=spec), settings))
        except KubeError as exc:
            if exc.transient:
                raise
            rejected = Observation(
                BuildState.FAILED, job_name=job_name, reason="JobRejected", message=str(exc)
            )
            return Outcome(meta.generation, rejected)
        logger.info("Created build Job %s/%s", meta.namespace, job_name)
        _delete_superseded_jobs(kube, meta)
        return Outcome(meta.generation, Observation(BuildState.PENDING, job_name=job_name))
    _delete_superseded_jobs(kube, meta)
    needs_pod = is_finished(job) or bool(job.get("status", {}).get("active"))
    observation = observe(job, kube.get_job_pod(meta.namespace, job_name) if needs_pod else None)
    if observation.state != BuildState.SUCCEEDED or observation.report is None:
        return Outcome(meta.generation, observation)
    try:
        output = _read_back(kube, registry, meta, spec, observation.report.digest)
    except _ReadbackError as failure:
        failed = Observation(
            BuildState.FAILED,
            job_name=observation.job_name,
            start_time=observation.start_time,
            completion_time=observation.completion_time,
            reason=failure.reason,
            message=failure.message,
        )
        return Outcome(meta.generation, failed)
    return Outcome(meta.generation, observation, output=output)


def reconcile(
    body: Mapping[str, Any],
    *,
    kube: KubeGateway,
    registry: RegistryGateway,
    settings: Settings,
    now: str,
) -> Result:
    """Bring one ServiceBuild one step closer to built; raise KubeError/RegistryError to retry later."""
    meta = ObjectMeta.model_validate(body["metadata"])
    previous = _previous_status(body.get("status"))
    if previous.observed_generation == meta.generation and previous.phase in _FINAL_PHASES:
        return Result(status=previous, written=False)

    try:
        spec = ServiceBuildSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        _delete_superseded_jobs(kube, meta)
        invalid = Observation(BuildState.ABSENT)
        outcome = Outcome(
            meta.generation, invalid, invalid_spec=describe_validation_error(exc, prefix="spec")
        )
    else:
        outcome = _observe_build(kube, registry, settings, meta, spec)

    status = decide(previous, outcome, now)
    if status == previous:
        return Result(status=status, written=False)
    patch = merge_patch(status_to_dict(previous), status_to_dict(status))
    kube.patch_servicebuild_status(meta.namespace, meta.name, patch)
    event = transition_event(previous, status)
    if event is not None:
        logger.info("ServiceBuild %s/%s: %s: %s", meta.namespace, meta.name, event.reason, event.message)
        try:
            kube.post_event(meta, event.type, event.reason, event.message, now)
        except KubeError as exc:
            logger.warning("Posting the %s event failed (the status holds the same): %s", event.reason, exc)
    return Result(status=status, written=True, event=event)
