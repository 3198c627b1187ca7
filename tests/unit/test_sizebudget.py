"""We test these aspects of the size budget decisions (`servicebuild.sizebudget`) and how the status
shows them:

- quantities in bytes: binary and decimal suffixes, fractions rounded up, exponents; `m` (milli) and
  what is no quantity refused;
- each platform measured against `maxBytes`, and against the same platform of the last successful build
  for `maxGrowthPercent`; a platform new to this build, or an earlier image of 0 bytes, has no growth; a
  single image compares with a single image only; at the limit is within it;
- `WithinSizeBudget` says whether the image was tagged (`Fail`) or pushed all the same (`Warn`);
- the spec needs at least one limit;
- the status: a success with a budget sets `WithinSizeBudget`, a `SizeBudgetExceeded` stall sets it
  False, a build in progress keeps it; the Warning Event of a `Warn` budget comes once per build.
"""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from servicebuild.api.models import BuildOutput, ServiceBuildStatus, SizeBudget
from servicebuild.failures import Failure, Reason
from servicebuild.report import BuildReport
from servicebuild.sizebudget import Measured, condition, excesses, measured, quantity_bytes
from servicebuild.status import Build, InProgress, Progress, Stalled, Succeeded, budget_event, decide

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("quantity", "size_bytes"),
    [
        ("50Mi", 50 * MIB),
        ("200M", 200_000_000),
        ("1.5Gi", 3 * 512 * MIB),
        ("1k", 1000),
        ("0.1Ki", 103),
        ("1e3", 1000),
        (2048, 2048),
    ],
)
def test_quantities_in_bytes(quantity: int | str, size_bytes: int) -> None:
    assert quantity_bytes(quantity) == size_bytes


@pytest.mark.parametrize("quantity", ["500m", "50MB", "-1Mi", "Mi"])
def test_what_is_no_byte_count_is_refused(quantity: str) -> None:
    with pytest.raises(ValueError, match=r"is not a quantity|is no byte count"):
        quantity_bytes(quantity)


def output(size_bytes: int, platforms: dict[str, int] | None = None, generation: int = 1) -> BuildOutput:
    listed = [
        {"platform": name, "digest": f"sha256:{index:064x}", "sizeBytes": size, "layers": 2}
        for index, (name, size) in enumerate((platforms or {}).items())
    ]
    return BuildOutput.model_validate(
        {
            "image": "registry.test/shop/web:1@sha256:" + "a" * 64,
            "digest": "sha256:" + "a" * 64,
            "sizeBytes": size_bytes,
            "size": "-",
            "layers": 3,
            "generation": generation,
            "platforms": listed or None,
        }
    )


def test_each_platform_is_measured_against_its_own_last_image() -> None:
    before = output(30 * MIB, {"linux/amd64": 10 * MIB, "linux/arm64": 20 * MIB})
    after = output(60 * MIB, {"linux/amd64": 12 * MIB, "linux/arm64": 40 * MIB, "linux/s390x": 8 * MIB})

    assert measured(after, before) == [
        Measured("linux/amd64", 12 * MIB, 10 * MIB),
        Measured("linux/arm64", 40 * MIB, 20 * MIB),
        Measured("linux/s390x", 8 * MIB, None),
    ]
    assert measured(output(5), None) == [Measured(None, 5, None)]
    assert measured(output(5), output(4)) == [Measured(None, 5, 4)]
    assert measured(output(5), before) == [Measured(None, 5, None)], "an index is no single image's past"


@pytest.mark.parametrize(
    ("budget", "image", "found"),
    [
        ({"maxBytes": "50Mi"}, Measured(None, 50 * MIB, None), []),
        (
            {"maxBytes": "50Mi"},
            Measured(None, 50 * MIB + 1, None),
            ["the image has 50.0 MiB, over maxBytes 50Mi"],
        ),
        (
            {"maxBytes": "10Mi"},
            Measured("linux/arm64", 12 * MIB, 12 * MIB),
            ["linux/arm64 has 12.0 MiB, over maxBytes 10Mi"],
        ),
        ({"maxGrowthPercent": 20}, Measured(None, 12 * MIB, 10 * MIB), []),
        (
            {"maxGrowthPercent": 20},
            Measured(None, 13 * MIB, 10 * MIB),
            ["the image grew 30% (10.0 MiB → 13.0 MiB), over maxGrowthPercent 20"],
        ),
        ({"maxGrowthPercent": 0}, Measured(None, 9 * MIB, 10 * MIB), []),
        ({"maxGrowthPercent": 0}, Measured("linux/amd64", 9 * MIB, None), []),
        ({"maxGrowthPercent": 0}, Measured(None, 9 * MIB, 0), []),
        (
            {"maxBytes": "1Mi", "maxGrowthPercent": 50},
            Measured(None, 4 * MIB, 2 * MIB),
            [
                "the image has 4.0 MiB, over maxBytes 1Mi",
                "the image grew 100% (2.0 MiB → 4.0 MiB), over maxGrowthPercent 50",
            ],
        ),
    ],
)
def test_budget_decisions(budget: dict[str, Any], image: Measured, found: list[str]) -> None:
    assert excesses(SizeBudget.model_validate(budget), [image]) == found


def test_the_condition_says_what_happened_to_the_image() -> None:
    warn = SizeBudget.model_validate({"maxBytes": "1Mi"})
    fail = SizeBudget.model_validate({"maxBytes": "1Mi", "action": "Fail"})

    assert condition(warn, [])[:2] == ("True", "WithinSizeBudget")
    assert condition(warn, ["the image has 2.0 MiB, over maxBytes 1Mi"]) == (
        "False",
        "SizeBudgetExceeded",
        "Over spec.sizeBudget (pushed all the same): the image has 2.0 MiB, over maxBytes 1Mi.",
    )
    assert "(not tagged)" in condition(fail, ["x"])[2]


def test_a_budget_needs_a_limit() -> None:
    with pytest.raises(ValidationError, match="maxBytes, maxGrowthPercent or both"):
        SizeBudget.model_validate({"action": "Fail"})
    with pytest.raises(ValidationError, match="not a quantity"):
        SizeBudget.model_validate({"maxBytes": "fifty"})
    assert SizeBudget.model_validate({"maxBytes": 1024}).max_bytes == "1024"


def conditions(status: ServiceBuildStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions or ()}


def test_the_status_sets_keeps_and_announces_the_budget() -> None:
    build = Build(generation=1, attempt=1, number=1)
    report = BuildReport(digest="sha256:" + "a" * 64, image_name=None, cached_steps=None, total_steps=None)
    over = ("False", "SizeBudgetExceeded", "Over spec.sizeBudget (pushed all the same): …")
    grown = decide(ServiceBuildStatus(), Succeeded(build, output(5), report, NOW, size_budget=over), NOW)

    assert conditions(grown)["WithinSizeBudget"] == ("False", "SizeBudgetExceeded")
    assert conditions(grown)["Ready"] == ("True", "BuildSucceeded")
    event = budget_event(ServiceBuildStatus(), grown)
    assert event is not None
    assert (event.type, event.reason) == ("Warning", "SizeBudgetExceeded")
    assert budget_event(grown, grown) is None, "once per build"

    next_build = Build(generation=2, attempt=1, number=2)
    running = decide(grown, InProgress(next_build, Progress.RUNNING), NOW)
    assert conditions(running)["WithinSizeBudget"] == ("False", "SizeBudgetExceeded")
    assert budget_event(grown, running) is None

    stalled = decide(running, Stalled(next_build, Failure(Reason.SIZE_BUDGET_EXCEEDED, "Over …")), NOW)
    assert conditions(stalled)["WithinSizeBudget"] == ("False", "SizeBudgetExceeded")
    assert conditions(stalled)["Stalled"] == ("True", "SizeBudgetExceeded")
    assert budget_event(running, stalled) is None, "the stall's transition Event says it"

    unbudgeted = decide(
        stalled, Succeeded(Build(generation=3, attempt=1, number=3), output(5), report, NOW), NOW
    )
    assert "WithinSizeBudget" not in conditions(unbudgeted), "no budget, no condition"
