"""We test these aspects:

- the success report is read: digest, image name (all pushed references), `user_cached` of `user_total`
  as the cache figures, and whether the registry cache was exported (`cacheExported`: true, false, or
  null when the cache is disabled; anything else, or a report without it, is "unknown", None);
- anything else is no report (None), never an exception: empty, log tails, binary junk, truncated or
  non-object JSON, wrong types, a malformed digest, input larger than a termination message;
- cache metrics that are missing, mistyped or inconsistent give no cache figures but keep the report;
- the log tail is the last lines of a failure message.
"""

import json

import pytest

from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport, log_tail, parse_report

DIGEST = "sha256:" + "ab12" * 16
METRICS = {
    "total": 14,
    "completed": 14,
    "user_total": 5,
    "user_cached": 4,
    "user_completed": 5,
    "user_cacheable": 4,
    "from": 1,
    "miss": 1,
    "client_duration_ms": 3291,
}
IMAGE = "registry.example.com/shop/checkout:1.4.2"


def message(**fields: object) -> str:
    report: dict[str, object] = {
        "digest": DIGEST,
        "imageName": IMAGE,
        "cacheMetrics": METRICS,
        "cacheExported": True,
    }
    report.update(fields)
    return json.dumps(report, separators=(",", ":")) + "\n"


def test_the_wrappers_exact_line_is_read() -> None:
    line = (
        '{"digest":"' + DIGEST + '","imageName":"' + IMAGE + '","cacheMetrics":{"total":14,"completed":14,'
        '"user_total":5,"user_cached":4,"user_completed":5,"user_cacheable":4,"from":1,"miss":1,'
        '"client_duration_ms":3291},"cacheExported":true}\n'
    )
    assert parse_report(line) == BuildReport(
        digest=DIGEST, image_name=IMAGE, cached_steps=4, total_steps=5, cache_exported=True
    )


def test_a_report_of_the_previous_wrapper_is_still_read() -> None:
    line = (
        '{"digest":"' + DIGEST + '","imageName":"' + IMAGE + '","cacheMetrics":{"total":14,"completed":14,'
        '"user_total":5,"user_cached":4,"user_completed":5,"user_cacheable":4,"from":1,"miss":1,'
        '"client_duration_ms":3291}}\n'
    )
    assert parse_report(line) == BuildReport(
        digest=DIGEST, image_name=IMAGE, cached_steps=4, total_steps=5, cache_exported=None
    )


@pytest.mark.parametrize(
    ("exported", "expected"),
    [
        pytest.param(True, True, id="exported"),
        pytest.param(False, False, id="export failed (no cache.manifest)"),
        pytest.param(None, None, id="cache disabled (null)"),
        pytest.param("true", None, id="string"),
        pytest.param(1, None, id="number"),
        pytest.param({}, None, id="object"),
    ],
)
def test_cache_exported(exported: object, expected: bool | None) -> None:
    report = parse_report(message(cacheExported=exported))
    assert report == BuildReport(DIGEST, IMAGE, 4, 5, cache_exported=expected)


def test_every_pushed_reference_is_kept_in_the_image_name() -> None:
    names = (
        f"{IMAGE},registry.example.com/shop/checkout:9fceb02d0ae5,registry.example.com/shop/checkout:build-3"
    )
    report = parse_report(message(imageName=names))
    assert report is not None
    assert report.image_name == names


@pytest.mark.parametrize(
    ("metrics", "cached", "total"),
    [
        pytest.param(METRICS, 4, 5, id="warm"),
        pytest.param({**METRICS, "user_cached": 0}, 0, 5, id="cold"),
        pytest.param(None, None, None, id="no metrics (null)"),
        pytest.param("garbage", None, None, id="metrics not an object"),
        pytest.param({"total": 3}, None, None, id="user figures missing"),
        pytest.param({**METRICS, "user_cached": "4"}, None, None, id="string count"),
        pytest.param({**METRICS, "user_cached": 4.0}, None, None, id="float count"),
        pytest.param({**METRICS, "user_cached": True}, None, None, id="boolean count"),
        pytest.param({**METRICS, "user_cached": -1}, None, None, id="negative count"),
        pytest.param({**METRICS, "user_cached": 6}, None, None, id="more cached than total"),
    ],
)
def test_cache_figures(metrics: object, cached: int | None, total: int | None) -> None:
    report = parse_report(message(cacheMetrics=metrics))
    assert report == BuildReport(
        digest=DIGEST, image_name=IMAGE, cached_steps=cached, total_steps=total, cache_exported=True
    )


def test_missing_metrics_key_keeps_the_report() -> None:
    line = json.dumps({"digest": DIGEST, "imageName": IMAGE})
    assert parse_report(line) == BuildReport(DIGEST, IMAGE, None, None)


@pytest.mark.parametrize("name", [None, "", 42, ["a"]])
def test_unusable_image_name_is_none(name: object) -> None:
    report = parse_report(message(imageName=name))
    assert report is not None
    assert report.image_name is None
    assert report.digest == DIGEST


LOG_TAIL = """\
#12 [build 3/4] RUN make
#12 0.402 main.c:3:10: fatal error: greet.h: No such file or directory
#12 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2
------
 > [build 3/4] RUN make:
------
Dockerfile:9
--------------------
   9 | >>> RUN make
--------------------
error: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="None"),
        pytest.param("", id="empty"),
        pytest.param("   \n", id="blank"),
        pytest.param(LOG_TAIL, id="log tail"),
        pytest.param("\x00\xff\xfe\x89PNG\r\n\x1a\n" + "\udcff" * 10, id="binary junk"),
        pytest.param(message()[:60], id="truncated JSON"),
        pytest.param(message()[:-3], id="cut before the last brace"),
        pytest.param("[" + json.dumps({"digest": DIGEST}) + "]", id="JSON list"),
        pytest.param('"' + DIGEST + '"', id="JSON string"),
        pytest.param("null", id="JSON null"),
        pytest.param("{}", id="empty object"),
        pytest.param(message(digest=None), id="digest null"),
        pytest.param(message(digest=123), id="digest number"),
        pytest.param(message(digest=DIGEST.upper()), id="digest upper case"),
        pytest.param(message(digest=DIGEST[:-1]), id="digest too short"),
        pytest.param(message(digest=DIGEST + "0"), id="digest too long"),
        pytest.param(message(digest="sha512:" + "a" * 128), id="other algorithm"),
        pytest.param(message(digest=" " + DIGEST), id="digest with space"),
        pytest.param(message(digest=""), id="digest empty (metadata not found)"),
        pytest.param('{"a":[' + "[" * 2000 + "]" * 2000 + "]}", id="nesting deeper than the recursion limit"),
        pytest.param(message(pad="x" * MAX_MESSAGE_BYTES), id="larger than a termination message"),
        pytest.param("{" + "a" * 10_000_000, id="huge input"),
        pytest.param('{"digest": NaN}', id="NaN"),
    ],
)
def test_anything_but_the_report_is_none(text: str | None) -> None:
    assert parse_report(text) is None


def test_surrounding_whitespace_is_tolerated() -> None:
    assert parse_report("\n  " + message() + "\n\n") == BuildReport(DIGEST, IMAGE, 4, 5, cache_exported=True)


def test_the_real_report_fits_a_termination_message() -> None:
    longest_name = ",".join(["registry.example.com:5000/" + "a" * 480 + ":" + "t" * 128] * 5)[:2800]
    longest_metrics = {"user_total": 5, "user_cached": 4, "pad": "x" * 980}
    assert len(json.dumps(longest_metrics, separators=(",", ":"))) <= 1024  # the wrapper's caps
    line = json.dumps(
        {
            "digest": DIGEST,
            "imageName": longest_name,
            "cacheMetrics": longest_metrics,
            "cacheExported": False,
        },
        separators=(",", ":"),
    )
    assert len(line.encode()) < MAX_MESSAGE_BYTES
    assert parse_report(line) == BuildReport(DIGEST, longest_name, 4, 5, cache_exported=False)


@pytest.mark.parametrize(
    ("text", "lines", "expected"),
    [
        pytest.param(None, 20, "", id="None"),
        pytest.param("", 20, "", id="empty"),
        pytest.param("one\ntwo\n", 20, "one\ntwo", id="shorter than the tail"),
        pytest.param("a\nb\nc\nd\n\n\n", 2, "c\nd", id="trailing blank lines dropped"),
        pytest.param("a\r\nb  \r\nc\r\n", 2, "b\nc", id="CRLF and trailing spaces"),
        pytest.param("a\nb\n", 0, "", id="no lines asked"),
    ],
)
def test_log_tail(text: str | None, lines: int, expected: str) -> None:
    assert log_tail(text, lines) == expected


def test_log_tail_keeps_the_error_at_the_end() -> None:
    tail = log_tail(LOG_TAIL, lines=3)
    assert tail.splitlines()[-1].startswith("error: failed to solve")
    assert len(tail.splitlines()) == 3
