"""We test these aspects:

- the plain log of a real cold build gives every step in the order it started, with its state, its
  time and its error (the failed cache import of a first build);
- a vertex printed twice (`DONE`, later `CACHED`) ends cached, as buildctl's metrics count it;
- the base images are the `FROM <ref>@sha256:<digest>` steps of the stages the target uses, with their
  stage; the `test` stage the target does not need never appears; a one-stage Dockerfile names no stage;
- the first uncached step is the first user step, in build order, neither `FROM` nor cached;
- build checks come with their rule, message and line, from the plain form and from the rawjson form
  (base64 `short` and `detail`, `url`, `range`), and both forms agree;
- the rawjson form orders steps by when they started, not by when they were listed;
- step names are taken apart with and without stage and platform, padded numbers, ONBUILD; BuildKit's
  own vertexes are no steps;
- garbage gives an empty result, never an exception (fixed cases and generated text).
"""

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebuild.buildlog import (
    BaseImage,
    BuildLog,
    BuildWarning,
    Step,
    StepName,
    StepState,
    parse_base_image,
    parse_plain,
    parse_rawjson,
    parse_step_name,
    parse_warning,
)

SAMPLES = Path(__file__).parent / "buildkit_samples"
BUILDER = "registry.test:5000/library/builder:bookworm"
BUSYBOX = "registry.test:5000/library/busybox:latest"
BUILDER_DIGEST = "sha256:a37fcee07d6dde3c2961f810e13ae5e9ee6e361ff7c0d69b93167d0686d56be1"
BUSYBOX_DIGEST = "sha256:44acfeb4dad965ca5367acd53f99632818bc951be60702b622689ca9e5cd1213"
CACHE_IMPORT_ERROR = (
    "failed to configure registry cache importer: registry.test:5000/samples/calc:buildcache: not found"
)

CHECKS = [
    BuildWarning(
        short="FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)",
        rule="FromAsCasing",
        message="'as' and 'FROM' keywords' casing do not match",
        line=1,
    ),
    BuildWarning(
        short='SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG "API_TOKEN")'
        " (line 2)",
        rule="SecretsUsedInArgOrEnv",
        message='Do not use ARG or ENV instructions for sensitive data (ARG "API_TOKEN")',
        line=2,
    ),
    BuildWarning(
        short='LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format'
        " (line 3)",
        rule="LegacyKeyValueFormat",
        message='"ENV key=value" should be used instead of legacy "ENV key value" format',
        line=3,
    ),
    BuildWarning(
        short="JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior"
        " related to OS signals (line 5)",
        rule="JSONArgsRecommended",
        message="JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
        line=5,
    ),
]
CHECK_DOCS = [
    (
        "The 'as' keyword should match the case of the 'from' keyword",
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
    ),
    (
        "Sensitive data should not be used in the ARG or ENV commands",
        "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
    ),
    (
        "Legacy key/value format with whitespace separator should not be used",
        "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
    ),
    (
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
    ),
]


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_a_cold_build_gives_every_step_in_order_with_its_state() -> None:
    log = parse_plain(sample("calc-cold-plain.log"))
    assert [(step.number, step.state, step.seconds) for step in log.steps] == [
        (1, StepState.DONE, 0.0),
        (2, StepState.DONE, 0.0),
        (3, StepState.DONE, 0.0),
        (4, StepState.DONE, 0.0),
        (5, StepState.ERROR, None),
        (6, StepState.DONE, 0.0),
        (7, StepState.DONE, 0.2),
        (8, StepState.DONE, 4.0),
        (9, StepState.DONE, 0.2),
        (10, StepState.DONE, 0.0),
        (11, StepState.DONE, 0.1),
        (12, StepState.DONE, 0.0),
        (13, StepState.DONE, 0.1),
        (14, StepState.DONE, 0.5),
    ]
    assert log.steps[4] == Step(
        number=5,
        name="importing cache manifest from registry.test:5000/samples/calc:buildcache",
        state=StepState.ERROR,
        error=CACHE_IMPORT_ERROR,
    )
    assert [step.name for step in log.steps[8:12]] == [
        "[build 2/4] WORKDIR /src",
        "[build 3/4] COPY util.h util.c calc.c ./",
        "[build 4/4] RUN gcc -static -Os -o /calc calc.c util.c",
        "[runtime 2/2] COPY --from=build /calc /usr/local/bin/calc",
    ]
    assert log.warnings == ()


def test_a_vertex_printed_again_as_cached_ends_cached() -> None:
    log = parse_plain(sample("calc-calc-c-edited-plain.log"))
    states = {step.name: step.state for step in log.steps}
    assert states[f"[runtime 1/2] FROM {BUSYBOX}@{BUSYBOX_DIGEST}"] == StepState.CACHED  # DONE, then CACHED
    assert states[f"[build 1/4] FROM {BUILDER}@{BUILDER_DIGEST}"] == StepState.DONE
    assert states["[build 2/4] WORKDIR /src"] == StepState.CACHED
    assert states["[build 3/4] COPY util.h util.c calc.c ./"] == StepState.DONE
    assert len(log.steps) == 14  # the repeated #6 is one step


@pytest.mark.parametrize(
    ("log", "images"),
    [
        pytest.param(
            "calc-cold-plain.log",
            [
                BaseImage(
                    BUSYBOX, BUSYBOX_DIGEST, "runtime", None, f"[runtime 1/2] FROM {BUSYBOX}@{BUSYBOX_DIGEST}"
                ),
                BaseImage(
                    BUILDER, BUILDER_DIGEST, "build", None, f"[build 1/4] FROM {BUILDER}@{BUILDER_DIGEST}"
                ),
            ],
            id="cold",
        ),
        pytest.param(
            "calc-calc-c-edited-plain.log",
            [
                BaseImage(
                    BUILDER, BUILDER_DIGEST, "build", None, f"[build 1/4] FROM {BUILDER}@{BUILDER_DIGEST}"
                ),
                BaseImage(
                    BUSYBOX, BUSYBOX_DIGEST, "runtime", None, f"[runtime 1/2] FROM {BUSYBOX}@{BUSYBOX_DIGEST}"
                ),
            ],
            id="calc.c edited",
        ),
        pytest.param(
            "checks-plain.log",
            [BaseImage(BUSYBOX, BUSYBOX_DIGEST, None, None, f"[1/2] FROM {BUSYBOX}@{BUSYBOX_DIGEST}")],
            id="one stage",
        ),
    ],
)
def test_base_images_are_the_resolved_from_steps_of_the_used_stages(
    log: str, images: list[BaseImage]
) -> None:
    parsed = parse_plain(sample(log))
    assert list(parsed.base_images) == images
    assert not any(
        step.name.startswith("[test ") for step in parsed.steps
    )  # a stage the target does not need


@pytest.mark.parametrize(
    ("log", "first"),
    [
        pytest.param("calc-cold-plain.log", "[build 2/4] WORKDIR /src", id="cold"),
        pytest.param("calc-calc-c-edited-plain.log", "[build 3/4] COPY util.h util.c calc.c ./", id="edited"),
        pytest.param("checks-plain.log", '[2/2] RUN echo "$UNDEFINED_THING" > /x', id="checks"),
    ],
)
def test_the_first_uncached_step(log: str, first: str) -> None:
    step = parse_plain(sample(log)).first_uncached
    assert step is not None
    assert step.name == first


def test_a_fully_cached_build_has_no_uncached_step() -> None:
    log = "#1 [internal] load .dockerignore\n#1 DONE 0.0s\n\n#2 [build 2/2] RUN make\n#2 CACHED\n"
    assert parse_plain(log).first_uncached is None


def test_build_checks_from_the_plain_log() -> None:
    assert list(parse_plain(sample("checks-plain.log")).warnings) == CHECKS


def test_build_checks_from_the_rawjson_log_with_detail_url_and_line() -> None:
    warnings = parse_rawjson(sample("checks-rawjson.log")).warnings
    assert [(warning.detail, warning.url) for warning in warnings] == [
        ((detail,), url) for detail, url in CHECK_DOCS
    ]
    assert [
        BuildWarning(warning.short, warning.rule, warning.message, warning.line) for warning in warnings
    ] == CHECKS


def test_the_rawjson_form_orders_steps_by_when_they_started() -> None:
    log = parse_rawjson(sample("checks-rawjson.log"))
    # The RUN step is listed before its FROM in the same message, but starts after it.
    assert [(step.number, step.name, step.state) for step in log.steps] == [
        (1, "[internal] load build definition from Dockerfile", StepState.DONE),
        (2, f"[internal] load metadata for {BUSYBOX}", StepState.DONE),
        (3, "[internal] load .dockerignore", StepState.DONE),
        (4, f"[1/2] FROM {BUSYBOX}@{BUSYBOX_DIGEST}", StepState.CACHED),
        (5, '[2/2] RUN echo "$UNDEFINED_THING" > /x', StepState.DONE),
        (6, "exporting to image", StepState.DONE),
    ]
    assert log.steps[4].seconds == 0.05
    assert log.base_images == parse_plain(sample("checks-plain.log")).base_images


def test_rawjson_errors_and_cancellations() -> None:
    lines = [
        {"vertexes": [{"digest": "sha256:a", "name": "[1/2] RUN make", "started": "2026-01-01T00:00:01Z"}]},
        {
            "vertexes": [
                {"digest": "sha256:b", "name": "[2/2] RUN b", "started": "2026-01-01T00:00:02.5+00:00"}
            ]
        },
        {
            "vertexes": [
                {
                    "digest": "sha256:a",
                    "started": "2026-01-01T00:00:01Z",
                    "completed": "2026-01-01T00:00:03.25Z",
                    "error": "process did not complete successfully: exit code: 2",
                },
                {"digest": "sha256:b", "completed": "2026-01-01T00:00:04Z", "error": "context canceled"},
                {"digest": "sha256:c", "name": "never started"},
            ]
        },
    ]
    log = parse_rawjson("\n".join(json.dumps(line) for line in lines))
    assert log.steps == (
        Step(
            1, "[1/2] RUN make", StepState.ERROR, 2.25, "process did not complete successfully: exit code: 2"
        ),
        Step(2, "[2/2] RUN b", StepState.CANCELED, None, "context canceled"),
    )


def test_plain_cancellation_and_crlf() -> None:
    log = parse_plain("#3 [a 1/1] RUN x\r\n#3 0.1 CACHED\r\n#3 CANCELED\r\n")
    assert log.steps == (Step(3, "[a 1/1] RUN x", StepState.CANCELED),)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        (
            "[build 3/4] COPY util.h util.c calc.c ./",
            StepName(None, "build", 3, 4, "COPY util.h util.c calc.c ./"),
        ),
        ("[1/2] FROM busybox", StepName(None, None, 1, 2, "FROM busybox")),
        ("[stage-1  3/12] RUN make", StepName(None, "stage-1", 3, 12, "RUN make")),
        ("[ 3/12] RUN make", StepName(None, None, 3, 12, "RUN make")),
        ("[linux/arm64 build 2/4] RUN go build", StepName("linux/arm64", "build", 2, 4, "RUN go build")),
        ("[linux/arm/v7 1/3] FROM alpine", StepName("linux/arm/v7", None, 1, 3, "FROM alpine")),
        (
            "[linux/amd64->arm64 build 2/4] RUN make",
            StepName("linux/amd64->arm64", "build", 2, 4, "RUN make"),
        ),
        ("[app 2/3] ONBUILD RUN make", StepName(None, "app", 2, 3, "ONBUILD RUN make")),
        ("[internal] load build context", None),
        ("exporting to image", None),
        ("[build 3/4]", None),
        ("[build x/4] RUN make", None),
        ("[1/1]  ", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_step_names(name: object, parsed: StepName | None) -> None:
    assert parse_step_name(name) == parsed


def test_the_keyword_of_a_step() -> None:
    assert [
        parse_step_name(name).keyword  # type: ignore[union-attr]
        for name in ("[a 1/2] copy x y", "[a 2/2] ONBUILD RUN make", "[1/1] x")
    ] == ["COPY", "ONBUILD", "X"]


def test_an_image_only_copied_from_has_no_stage() -> None:
    step = f"FROM docker.io/library/alpine:3.20@{BUSYBOX_DIGEST}"
    assert parse_base_image(step) == BaseImage(
        "docker.io/library/alpine:3.20", BUSYBOX_DIGEST, None, None, step
    )


@pytest.mark.parametrize(
    "step",
    [
        "[build 1/4] FROM registry.test:5000/library/builder:bookworm",  # not resolved (failed)
        f"[build 1/4] FROM builder@{BUILDER_DIGEST[:-1]}",
        f"[build 1/4] FROM builder@{BUILDER_DIGEST.upper()}",
        f"[internal] load metadata for builder@{BUILDER_DIGEST}",
        f"[build 2/4] COPY --from=builder@{BUILDER_DIGEST} / /",
        None,
    ],
)
def test_what_is_no_base_image(step: object) -> None:
    assert parse_base_image(step) is None


@pytest.mark.parametrize(
    ("short", "rule", "message", "line"),
    [
        ("FromAsCasing: casing (line 1)", "FromAsCasing", "casing", 1),
        (
            "UndefinedVar: Usage of undefined variable '$X' (line 12)",
            "UndefinedVar",
            "Usage of undefined variable '$X'",
            12,
        ),
        ("no rule here", None, "no rule here", None),
        ("Rule: no line", "Rule", "no line", None),
    ],
)
def test_warnings(short: str, rule: str | None, message: str, line: int | None) -> None:
    assert parse_warning(short) == BuildWarning(short, rule, message, line)


GARBAGE = [
    None,
    42,
    b"#1 WARN: Rule: x (line 1)",
    "",
    "\x00\xff\ufffd\n#\n#x y\n# 1 z\n",
    "#1\n#2 \n",
    "{" * 10_000,
    '{"vertexes": "no"}\n{"vertexes": [1, null, {"digest": 3}]}',
    '{"warnings": [{"short": "!!!"}, {"short": 5}]}',
    '{"warnings": [{"short": "' + base64.b64encode(b"\xff\xfe").decode() + '", "range": "x"}]}',
    '[{"vertexes": []}]\nnull\n"text"',
    '{"vertexes": [{"digest": "sha256:a", "name": "x", "started": "yesterday", "completed": 5}]}',
    '{"vertexes": [{"digest": "sha256:a", "name": "x", "started": "2026-13-45T99:99:99Z"}]}',
    '{"a": [' + "[" * 5000 + "]" * 5000 + "]}",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_never_raises(text: object) -> None:
    for parse in (parse_plain, parse_rawjson):
        log = parse(text)
        assert isinstance(log, BuildLog)
        assert log.base_images == ()
        assert log.first_uncached is None or log.first_uncached.name


def test_binary_warning_text_is_replaced_not_raised() -> None:
    line = {"warnings": [{"short": base64.b64encode(b"Rule: \xff (line 2)").decode()}]}
    (warning,) = parse_rawjson(json.dumps(line)).warnings
    assert (warning.rule, warning.message, warning.line) == ("Rule", "\ufffd", 2)


@given(st.text())
def test_any_text_is_a_plain_log(text: str) -> None:
    assert isinstance(parse_plain(text), BuildLog)


@given(st.lists(st.text(alphabet='{}[]":,0123456789abcdefghijklmnopqrstuvwxyz# \n'), max_size=20))
def test_any_text_is_a_rawjson_log(lines: list[str]) -> None:
    assert isinstance(parse_rawjson("\n".join(lines)), BuildLog)
