"""The end-to-end tests' image names, without a cluster.

We test these aspects:
- the nodes pull the pushed image by its digest from the registry name they know (kind's nodes:
  localhost:5001 for what build Pods push to kind-registry:5000), or by the pushed name when no pull
  registry is set;
- an image without a digest is refused rather than pulled by a name that may mean another image;
- the repository and tag the registry is read with come out of the pushed name.
"""

import pytest

from image_names import pull_name, repository_and_tag

DIGEST = "sha256:" + "4f" * 32
PUSHED = f"kind-registry:5000/demo/hello:1.0.0@{DIGEST}"

PULL_NAMES = {
    "kind's node-side name": (PUSHED, "localhost:5001", f"localhost:5001/demo/hello@{DIGEST}"),
    "another registry name": (PUSHED, "registry.example.com", f"registry.example.com/demo/hello@{DIGEST}"),
    "a nested repository": (
        f"kind-registry:5000/shop/api/checkout:2@{DIGEST}",
        "localhost:5001",
        f"localhost:5001/shop/api/checkout@{DIGEST}",
    ),
    "no pull registry: the pushed name": (PUSHED, "", PUSHED),
}


@pytest.mark.parametrize(("image", "pull_registry", "pulled"), PULL_NAMES.values(), ids=PULL_NAMES.keys())
def test_pull_name(image: str, pull_registry: str, pulled: str) -> None:
    assert pull_name(image, pull_registry) == pulled


@pytest.mark.parametrize("pull_registry", ["localhost:5001", ""])
def test_an_image_without_a_digest_is_refused(pull_registry: str) -> None:
    with pytest.raises(ValueError, match="names no digest"):
        pull_name("kind-registry:5000/demo/hello:1.0.0", pull_registry)


def test_repository_and_tag() -> None:
    assert repository_and_tag(PUSHED) == ("demo/hello", "1.0.0")
