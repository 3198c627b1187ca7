"""What BuildKit does with a build's `buildctl build` arguments, played against the test registries.

Shared by the two stand-ins that play BuildKit: the kubelet's (tests/integration/kubelet.py, a build Job's
arguments) and the stand-in `buildctl` of builder pools (`support.fake_buildctl`). Both push a real image
(or an index, for several platforms or attestations) under every name of `--output type=image,name=…`, by
digest only with `push-by-digest=true`, and print BuildKit's words for the base images, the build checks
and the failures they play.
"""

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from servicebuild.imageref import parse_image

from .oci_registry import (
    OCI_INDEX,
    SLSA_PROVENANCE,
    SPDX_SBOM,
    buildkit_history,
    push_image,
    push_index,
    tag_digest,
)

DOCKERFILE_CHECK = "BUILDKIT_DOCKERFILE_CHECK"

BUILDKIT_FAILURE_LOG = """\
#9 [build 3/4] RUN make greet
#9 0.412 cc -O2 -o greet main.c greet.c
#9 0.431 main.c:3:10: fatal error: greet.h: No such file or directory
#9 ERROR: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
------
 > [build 3/4] RUN make greet:
0.431 main.c:3:10: fatal error: greet.h: No such file or directory
------
Dockerfile:7
--------------------
   5 |     COPY main.c greet.c Makefile ./
   6 |     RUN make greet
--------------------
ERROR: failed to solve: process "/bin/sh -c make greet" did not complete successfully: exit code: 2
"""
"""What a failing build prints last: a compile step's error, the Dockerfile excerpt, BuildKit's verdict."""

_FROM_RE = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.MULTILINE | re.IGNORECASE)
_TEST_REGISTRIES = ("127.0.0.1:", "localhost:")
"""The registries a test can reach; base images and scanners elsewhere are taken as pulled."""


def option_values(args: Sequence[str], flag: str) -> list[str]:
    """Every value of `flag` (`--opt`, `--secret`, …) in buildctl's arguments, in order."""
    return [args[index + 1] for index, argument in enumerate(args[:-1]) if argument == flag]


def frontend_options(args: Sequence[str]) -> dict[str, str]:
    """The `--opt key=value` options, by key (a later one wins, as buildctl's map does)."""
    return dict(option.partition("=")[::2] for option in option_values(args, "--opt"))


def csv_attributes(value: str) -> dict[str, str]:
    """A CSV `key=value,…` flag value (`--output`, `--secret`, the cache flags) as buildctl reads it."""
    return dict(part.partition("=")[::2] for part in next(csv.reader([value])))


def output_options(args: Sequence[str]) -> dict[str, str]:
    """The `--output type=image` attributes."""
    for value in option_values(args, "--output"):
        attributes = csv_attributes(value)
        if attributes.get("type") == "image":
            return attributes
    raise AssertionError(f"no --output type=image in {list(args)}")


def output_names(args: Sequence[str]) -> list[str]:
    """The names BuildKit pushes: `name` of the `--output type=image`."""
    return output_options(args)["name"].split(",")


def platforms(args: Sequence[str]) -> list[str]:
    value = frontend_options(args).get("platform")
    return value.split(",") if value else []


def attestation_options(args: Sequence[str]) -> dict[str, str]:
    """The `--opt attest:<type>=<params>`, by type."""
    return {
        key.removeprefix("attest:"): value
        for key, value in frontend_options(args).items()
        if key.startswith("attest:")
    }


def attestation_predicates(args: Sequence[str]) -> tuple[str, ...]:
    """The in-toto predicate types BuildKit attests: SBOM first, as BuildKit orders them."""
    options = attestation_options(args)
    return (
        *((SPDX_SBOM,) if "sbom" in options else ()),
        *((SLSA_PROVENANCE,) if "provenance" in options else ()),
    )


def missing_scanner_log(scanner: str) -> str:
    """buildctl's end when BuildKit cannot resolve the SBOM scanner (seen on a real cluster, buildkit.md)."""
    return f"""\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 104B done
#1 DONE 0.0s

#5 [internal] load metadata for {scanner}
#5 ERROR: {scanner}: not found
------
 > [internal] load metadata for {scanner}:
------
error: failed to solve: failed to resolve source metadata for {scanner}: {scanner}: not found
"""


def missing_scanner(args: Sequence[str]) -> str | None:
    """The SBOM scanner the build names, when it is on a test registry that does not have it."""
    generator = attestation_options(args).get("sbom", "").partition("generator=")[2]
    if not generator:
        return None
    scanner = parse_image(generator)
    if not scanner.registry.startswith(_TEST_REGISTRIES):
        return None
    try:
        tag_digest(scanner.registry, scanner.repository, scanner.tag)
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            return generator
        raise
    return None


def check_warnings(dockerfile: str, args: Sequence[str]) -> list[str]:
    """The build checks BuildKit reports for the Dockerfile, worded as `checks-plain.log` in the shared
    samples (`<Rule>: <message> (line N)`): FromAsCasing only, less the checks the build skips."""
    skip = frontend_options(args).get(f"build-arg:{DOCKERFILE_CHECK}", "")
    skipped = skip.removeprefix("skip=").split(",") if skip.startswith("skip=") else []
    warnings = []
    for number, line in enumerate(dockerfile.splitlines(), start=1):
        words = line.split()
        if len(words) >= 4 and words[0].upper() == "FROM" and words[-2].upper() == "AS":
            from_word, as_word = words[0], words[-2]
            if from_word.isupper() != as_word.isupper() and "FromAsCasing" not in skipped:
                message = f"'{as_word}' and '{from_word}' keywords' casing do not match"
                warnings.append(f"FromAsCasing: {message} (line {number})")
    return warnings


def base_image_steps(dockerfile: str, mirrors: Mapping[str, str]) -> list[str]:
    """The `[<stage> 1/2] FROM <ref>@<digest>` steps BuildKit prints for the Dockerfile's base images,
    resolved against the test registries (others are not reachable here and are left out)."""
    stages = _FROM_RE.findall(dockerfile)
    steps = []
    for index, (ref, stage) in enumerate(stages):
        if ref == "scratch" or any(ref == earlier for _, earlier in stages[:index]):
            continue
        image = parse_image(ref)
        if not image.registry.startswith(_TEST_REGISTRIES):
            continue
        digest = tag_digest(mirrors.get(image.registry, image.registry), image.repository, image.tag)
        steps.append(f"[{stage or f'stage-{index}'} 1/2] FROM {image}@{digest}")
    return steps


@dataclass(frozen=True)
class PushedResult:
    """What BuildKit pushed for a build, as its metadata file describes it."""

    digest: str
    descriptor: dict[str, Any]
    """`containerimage.descriptor`: media type, digest, the manifest's own size, the platform of one image."""
    config_digest: str | None
    """`containerimage.config.digest`; None for an index."""


def push_result(
    args: Sequence[str],
    *,
    seed: str,
    dockerfile: str,
    auth: tuple[str, str] | None,
    mirrors: Mapping[str, str],
) -> PushedResult:
    """Push the build's result under every name of its `--output`, as BuildKit does: an index for platforms
    or attestations, by digest only (untagged) with `push-by-digest=true`. `seed` makes the layers: the
    same seed pushes the same image."""
    names = [parse_image(name) for name in output_names(args)]
    by_digest = output_options(args).get("push-by-digest") == "true"
    predicates = attestation_predicates(args)
    layers = [f"{seed}: layer {index}\n".encode() * (index + 1) for index in range(3)]
    # Attestations make BuildKit push an index even for one platform.
    images = None if platforms(args) else {"linux/amd64": layers}
    history = buildkit_history(dockerfile, 2 if images is None else len(layers))
    result = None
    for image in names:
        registry = mirrors.get(image.registry, image.registry)
        tag = None if by_digest else image.tag
        if images is None or predicates:
            index = push_index(
                registry,
                image.repository,
                tag,
                auth=auth,
                images=images,
                history=history,
                predicates=predicates,
            )
            descriptor = {"mediaType": OCI_INDEX, "digest": index.digest, "size": index.manifest_size}
            result = PushedResult(index.digest, descriptor, None)
        else:
            pushed = push_image(registry, image.repository, tag, layers, auth=auth, history=history)
            descriptor = {
                "mediaType": pushed.media_type,
                "digest": pushed.digest,
                "size": len(pushed.manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
            result = PushedResult(pushed.digest, descriptor, pushed.manifest["config"]["digest"])
    assert result is not None, "an --output names at least one image"
    return result
