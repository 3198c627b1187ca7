"""Image references: parse `registry/repository:tag` the way Docker does, without I/O."""

import re
from dataclasses import dataclass

# The reference grammar of distribution/reference, narrowed to what can be pushed: a name and a tag.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
IMAGE_PATTERN = rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?$"
"""A pushable image reference: an optional registry, a repository path and an optional tag."""

_IMAGE_RE = re.compile(IMAGE_PATTERN)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference."""

    registry: str
    """The registry host as users write it (`docker.io` for Docker Hub), with its port if any."""
    repository: str
    """The repository path inside the registry (`library/nginx` for `nginx`)."""
    tag: str

    @property
    def api_host(self) -> str:
        """The host that serves the distribution API for this registry."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """`registry/repository`, the image without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> "ImageRef":
        return ImageRef(self.registry, self.repository, tag)

    def with_digest(self, digest: str) -> str:
        """`registry/repository:tag@digest`, the reference that pins what was pushed."""
        return f"{self}@{digest}"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_image(reference: str) -> ImageRef:
    """Parse and normalise a reference; raise ValueError naming what is wrong."""
    if not _IMAGE_RE.match(reference):
        raise ValueError(f"{reference!r} is not a valid image reference (registry/repository:tag)")
    remainder, tag = reference, "latest"
    last_slash = reference.rfind("/")
    if ":" in reference[last_slash + 1 :]:
        remainder, tag = reference.rsplit(":", 1)
    first, _, rest = remainder.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, remainder
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return ImageRef(registry=registry, repository=repository, tag=tag)
