"""Whether a built image is within `spec.sizeBudget`; pure.

Each platform's image (the one image when the build made no index) is measured as the registry serves it,
config and compressed layers (`status.output.platforms[].sizeBytes`), against `maxBytes` and, for growth,
against the same platform's image of the last successful build (`status.output`, which a build failed by
its budget does not replace). A platform the last build did not have, or an image of 0 bytes, has no
growth to measure.

`quantity_bytes` reads a Kubernetes quantity: the one library that does (`kubernetes.utils`) is reserved to
the gateway by the import contracts, and the pure core needs only these dozen lines.
"""

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from servicebuild.api.models import (
    QUANTITY_PATTERN,
    BuildOutput,
    SizeBudget,
    SizeBudgetAction,
)
from servicebuild.status import ConditionValue, human_size

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


@dataclass(frozen=True)
class Measured:
    """One image of the build: its platform (None for a single image) and size, and the last build's."""

    platform: str | None
    size_bytes: int
    previous_bytes: int | None


def quantity_bytes(quantity: int | str) -> int:
    """A quantity such as `50Mi`, `200M` or `1.5Gi` in bytes, rounded up; ValueError for anything else."""
    text = str(quantity)
    if not re.fullmatch(QUANTITY_PATTERN, text):
        raise ValueError(f"{text!r} is not a quantity")
    number = re.match(r"^[+]?[0-9.]+([eE][+-]?[0-9]+)?", text)
    suffix = text[number.end() :] if number else ""
    if suffix not in _SUFFIXES:  # `m` (milli) and the like: no fraction of a byte is a budget
        raise ValueError(f"{text!r} is no byte count")
    return math.ceil(Decimal(text[: len(text) - len(suffix)]) * _SUFFIXES[suffix])


def measured(output: BuildOutput, previous: BuildOutput | None) -> list[Measured]:
    """The images of `output` with the sizes of the same images in `previous` (the last success)."""
    if not output.platforms:
        before = previous.size_bytes if previous is not None and not previous.platforms else None
        return [Measured(None, output.size_bytes, before)]
    earlier = {p.platform: p.size_bytes for p in (previous.platforms or [])} if previous is not None else {}
    return [Measured(p.platform, p.size_bytes, earlier.get(p.platform)) for p in output.platforms]


def excesses(budget: SizeBudget, images: list[Measured]) -> list[str]:
    """What is over budget, one sentence per image and limit; empty when all is within it."""
    found = []
    limit = quantity_bytes(budget.max_bytes) if budget.max_bytes is not None else None
    for image in images:
        name, size = image.platform or "the image", human_size(image.size_bytes)
        if limit is not None and image.size_bytes > limit:
            found.append(f"{name} has {size}, over maxBytes {budget.max_bytes}")
        growth = _growth_percent(image)
        allowed = budget.max_growth_percent
        if allowed is not None and growth is not None and growth > allowed:
            before = human_size(image.previous_bytes or 0)
            found.append(f"{name} grew {growth:.0f}% ({before} → {size}), over maxGrowthPercent {allowed}")
    return found


def condition(budget: SizeBudget, found: list[str]) -> ConditionValue:
    """`WithinSizeBudget` for the excesses `found`."""
    if not found:
        return ("True", "WithinSizeBudget", "Every image of the last build is within spec.sizeBudget.")
    what = "not tagged" if budget.action == SizeBudgetAction.FAIL else "pushed all the same"
    return ("False", "SizeBudgetExceeded", f"Over spec.sizeBudget ({what}): {'; '.join(found)}.")


def _growth_percent(image: Measured) -> float | None:
    if not image.previous_bytes:
        return None
    return (image.size_bytes - image.previous_bytes) * 100 / image.previous_bytes
