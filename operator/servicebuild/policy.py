"""What the platform team allows a build: builder images and push registries; what a spec may combine;
pure."""

import re
from datetime import timedelta

from servicebuild.api.models import Provenance, ServiceBuildSpec, parse_duration
from servicebuild.config import Settings
from servicebuild.failures import Failure, Reason
from servicebuild.giturl import is_full_commit, parse_git_url


def builder_image_problem(spec: ServiceBuildSpec, settings: Settings) -> Failure | None:
    """Another BuildKit image only from SERVICEBUILD_ALLOWED_BUILDER_IMAGES."""
    if spec.builder_image is None or spec.builder_image in settings.allowed_builder_images:
        return None
    return Failure(
        Reason.INVALID_SPEC,
        f"spec.builderImage: {spec.builder_image!r} is not an image the operator allows"
        " (SERVICEBUILD_ALLOWED_BUILDER_IMAGES).",
    )


# BuildKit's SecretsUsedInArgOrEnv check (`getSecretsRegex`, frontend/dockerfile/dockerfile2llb/
# validations.go): a token at the start or end of the name, or between underscores, in any case.
_SECRET_NAME_RE = re.compile(
    r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    re.IGNORECASE,
)
_NOT_SECRET_NAME_RE = re.compile(r"(?:_|^)(?:public|file|version)(?:_|$)", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """Whether BuildKit's SecretsUsedInArgOrEnv check would flag an ARG or ENV of this name."""
    return bool(_SECRET_NAME_RE.search(name)) and not _NOT_SECRET_NAME_RE.search(name)


def provenance_problem(spec: ServiceBuildSpec, settings: Settings) -> Failure | None:
    """`max` provenance records every build argument's value in an attestation anyone who may pull the
    image may read: not with a build argument that looks like a secret."""
    if settings.provenance_of(spec.attestations) != Provenance.MAX:
        return None
    flagged = sorted(name for name in spec.build_args if looks_secret(name))
    if not flagged:
        return None
    source = (
        "spec.attestations.provenance" if spec.attestations.provenance else "SERVICEBUILD_DEFAULT_PROVENANCE"
    )
    return Failure(
        Reason.INVALID_SPEC,
        f"spec.buildArgs: {', '.join(flagged)}: provenance `max` ({source}) records build argument values in"
        " an attestation pushed with the image, and BuildKit's SecretsUsedInArgOrEnv check takes such names"
        " for secrets: pass secrets in spec.secrets (`RUN --mount=type=secret`), or set"
        " spec.attestations.provenance to `min`.",
    )


def push_registry_problem(namespace: str, spec: ServiceBuildSpec, settings: Settings) -> Failure | None:
    """A platform team may pin each namespace to its registries (SERVICEBUILD_ALLOWED_PUSH_REGISTRIES)."""
    allowed = settings.push_registries_of(namespace)
    if allowed is None:
        return None
    targets = [("spec.output.image", spec.output.ref.registry)]
    if not spec.cache.disabled:
        targets.append(("spec.cache.ref", spec.cache_ref.registry))
    for field, registry in targets:
        if registry not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            return Failure(
                Reason.REGISTRY_NOT_ALLOWED,
                f"{field}: builds in namespace {namespace!r} may not push to {registry!r}"
                f" (allowed: {listed}).",
            )
    return None


def poll_interval(spec: ServiceBuildSpec) -> timedelta | None:
    """How often the spec's revision is resolved again; None when it is not (no git source, no or a `0s`
    interval, or a full commit id, which cannot move)."""
    git = spec.source.git
    if git is None or git.poll_interval is None:
        return None
    seconds = parse_duration(git.poll_interval)
    if seconds == 0 or (git.revision is not None and is_full_commit(git.revision)):
        return None
    return timedelta(seconds=seconds)


def poll_problem(spec: ServiceBuildSpec, settings: Settings) -> Failure | None:
    """A poll interval below the operator's minimum, or on a remote the operator cannot reach."""
    interval = poll_interval(spec)
    git = spec.source.git
    if interval is None or git is None:
        return None
    if interval < settings.min_poll_interval:
        return Failure(
            Reason.INVALID_SPEC,
            f"spec.source.git.pollInterval: {git.poll_interval} is shorter than the operator allows"
            f" ({int(settings.min_poll_interval.total_seconds())}s, SERVICEBUILD_MIN_POLL_INTERVAL).",
        )
    try:
        ssh = parse_git_url(git.url).is_ssh
    except ValueError:
        return None  # the git gateway says what is wrong with the URL when the build starts
    if ssh:
        return Failure(
            Reason.INVALID_SPEC,
            "spec.source.git.pollInterval: an SSH remote cannot be polled, as the operator does not contact"
            " SSH remotes: use the repository's HTTPS URL (with a token in authSecret), or no pollInterval.",
        )
    return None
