"""Names of the images the samples pushed, as the end-to-end tests read and pull them; pure, no cluster."""


def repository_and_tag(image: str) -> tuple[str, str]:
    """`kind-registry:5000/demo/hello:1.0.0@sha256:...` -> (`demo/hello`, `1.0.0`).

    The name starts with its registry host, as every sample's `spec.output.image` does.
    """
    name = image.split("@", 1)[0]
    _registry, _, path = name.partition("/")
    repository, _, tag = path.rpartition(":")
    return repository, tag


def pull_name(image: str, pull_registry: str) -> str:
    """The name the cluster's nodes pull a pushed image by: its repository and digest on `pull_registry`.

    Build Pods and nodes may know one registry by different names: in kind, build Pods push to
    kind-registry:5000 and the nodes' containerd pulls localhost:5001 from it. An empty `pull_registry`
    keeps the name the image was pushed as.
    """
    if "@" not in image:
        raise ValueError(f"{image!r} names no digest; the nodes must pull exactly the image built")
    if not pull_registry:
        return image
    repository, _ = repository_and_tag(image)
    return f"{pull_registry}/{repository}@{image.partition('@')[2]}"
