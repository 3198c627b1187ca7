"""What the platform team allows a build: builder images and push registries; pure."""

from servicebuild.api.models import ServiceBuildSpec
from servicebuild.config import Settings
from servicebuild.failures import Failure, Reason


def builder_image_problem(spec: ServiceBuildSpec, settings: Settings) -> Failure | None:
    """Another BuildKit image only from SERVICEBUILD_ALLOWED_BUILDER_IMAGES."""
    if spec.builder_image is None or spec.builder_image in settings.allowed_builder_images:
        return None
    return Failure(
        Reason.INVALID_SPEC,
        f"spec.builderImage: {spec.builder_image!r} is not an image the operator allows"
        " (SERVICEBUILD_ALLOWED_BUILDER_IMAGES).",
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
