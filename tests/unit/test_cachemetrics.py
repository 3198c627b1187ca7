"""We test these aspects:

- the real metrics files give their `cache miss:` lines as listed and their JSON summary;
- the first miss in build order, with the plain log's order: after a one-line change of calc.c it is
  `[build 3/4] COPY util.h util.c calc.c ./`, in a cold build `[build 2/4] WORKDIR /src`; and it is the
  same whatever order the misses are listed in (buildctl lists them in Go map order, not a promised one);
- without a log, the names alone order the misses: by step number within a stage, a stage another
  missed step copies or mounts from first; misses the log does not name come after those it does;
- a summary with missing or mistyped numbers keeps the good ones; garbage gives empty metrics, never an
  exception.
"""

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebuild.buildlog import parse_plain
from servicebuild.cachemetrics import (
    CacheMetrics,
    CacheSummary,
    first_miss,
    order_misses,
    parse_cache_metrics,
)

SAMPLES = Path(__file__).parent / "buildkit_samples"
COPY_SOURCES = "[build 3/4] COPY util.h util.c calc.c ./"
EDITED_MISSES = (
    "[runtime 2/2] COPY --from=build /calc /usr/local/bin/calc",
    "[build 4/4] RUN gcc -static -Os -o /calc calc.c util.c",
    COPY_SOURCES,
)


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_the_metrics_of_a_rebuild_after_an_edit() -> None:
    assert parse_cache_metrics(sample("calc-calc-c-edited-cache-metrics.json")) == CacheMetrics(
        misses=EDITED_MISSES,
        summary=CacheSummary(
            total=14,
            completed=14,
            user_total=6,
            user_cached=2,
            user_completed=6,
            user_cacheable=4,
            from_steps=2,
            miss=3,
            client_duration_ms=429,
        ),
    )


def test_the_metrics_of_a_cold_build() -> None:
    metrics = parse_cache_metrics(sample("calc-cold-cache-metrics.json"))
    assert metrics.misses == (*EDITED_MISSES, "[build 2/4] WORKDIR /src")
    assert metrics.summary is not None
    assert (metrics.summary.user_cached, metrics.summary.miss) == (0, 4)


@pytest.mark.parametrize(
    ("build", "first"),
    [
        pytest.param("calc-calc-c-edited", COPY_SOURCES, id="calc.c edited"),
        pytest.param("calc-cold", "[build 2/4] WORKDIR /src", id="cold"),
    ],
)
def test_the_first_miss_in_the_order_of_the_log_whatever_the_listing_order(build: str, first: str) -> None:
    misses = parse_cache_metrics(sample(f"{build}-cache-metrics.json")).misses
    order = parse_plain(sample(f"{build}-plain.log")).build_order
    for listed in itertools.permutations(misses):
        assert first_miss(listed, order) == first
        assert first_miss(listed) == first  # the names alone agree here
    assert order_misses(misses, order)[0] == first
    assert order_misses(misses, order)[-1] == "[runtime 2/2] COPY --from=build /calc /usr/local/bin/calc"


def test_by_names_alone_a_stage_copied_from_comes_first() -> None:
    misses = [
        "[runtime 2/3] COPY --from=build /app /app",
        "[runtime 3/3] RUN --mount=type=bind,from=assets,target=/a cp -r /a /srv",
        "[build 4/4] RUN make",
        "[assets 2/2] RUN minify",
        "[build 3/4] COPY . .",
    ]
    assert order_misses(misses) == (
        "[assets 2/2] RUN minify",
        "[build 3/4] COPY . .",
        "[build 4/4] RUN make",
        "[runtime 2/3] COPY --from=build /app /app",
        "[runtime 3/3] RUN --mount=type=bind,from=assets,target=/a cp -r /a /srv",
    )


def test_platforms_are_ordered_apart_and_a_copied_image_is_no_stage() -> None:
    misses = [
        "[linux/arm64 app 2/2] COPY --from=docker.io/library/alpine:3 /etc/x /x",
        "[linux/amd64 app 2/2] COPY --from=docker.io/library/alpine:3 /etc/x /x",
        "[linux/arm64 app 1/2] RUN x",
    ]
    assert first_miss(misses) == "[linux/arm64 app 1/2] RUN x"


def test_misses_the_log_names_come_before_the_others() -> None:
    order = ["[internal] load .dockerignore", "[b 2/2] RUN y"]
    assert order_misses(["odd vertex", "[a 1/2] RUN x", "[b 2/2] RUN y", "[b 2/2] RUN y"], order) == (
        "[b 2/2] RUN y",
        "[a 1/2] RUN x",
        "odd vertex",
    )


def test_stages_using_each_other_in_a_loop_still_get_an_order() -> None:
    misses = ["[a 2/2] COPY --from=b / /", "[b 2/2] COPY --from=a / /"]
    assert set(order_misses(misses)) == set(misses)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", CacheMetrics(), id="empty"),
        pytest.param(None, CacheMetrics(), id="None"),
        pytest.param(b"cache miss: x", CacheMetrics(), id="bytes"),
        pytest.param("cache miss: \ncache miss:  \n", CacheMetrics(), id="blank miss"),
        pytest.param("cache miss: [a 1/1] RUN x\r\n", CacheMetrics(("[a 1/1] RUN x",)), id="CRLF"),
        pytest.param('{"user_total": 3', CacheMetrics(), id="cut JSON"),
        pytest.param("[1, 2]\n{}", CacheMetrics(summary=CacheSummary(*[None] * 9)), id="empty summary"),
        pytest.param(
            '{"total": "14", "completed": -1, "user_total": 6, "miss": true, "from": 2.0}',
            CacheMetrics(summary=CacheSummary(None, None, 6, None, None, None, None, None, None)),
            id="mistyped numbers",
        ),
        pytest.param("{" + '"a":' * 5000 + "1" + "}" * 5000, CacheMetrics(), id="deep"),
        pytest.param('{"a": [' + "[" * 1000 + "]" * 1000 + "]}", CacheMetrics(), id="longer than a summary"),
    ],
)
def test_garbage_and_partial_metrics(text: object, expected: CacheMetrics) -> None:
    assert parse_cache_metrics(text) == expected


@pytest.mark.parametrize("misses", [None, "cache miss: x", [None, 3]])
def test_first_miss_of_garbage_is_none(misses: object) -> None:
    assert first_miss(misses, "abc") is None  # type: ignore[arg-type]
    assert first_miss(misses) is None  # type: ignore[arg-type]


@given(st.text())
def test_any_text_is_metrics(text: str) -> None:
    metrics = parse_cache_metrics(text)
    assert first_miss(metrics.misses) in {None, *metrics.misses}
