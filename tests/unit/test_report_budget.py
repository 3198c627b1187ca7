"""We test these aspects:

- the facts of the real builds: base images in log order, the first cache miss in build order (the COPY
  of the edited sources; WORKDIR when cold; without metrics the first uncached step), the warnings;
- the message: the report line first, then whole fact lines in priority order (base images, first miss,
  warnings) while they fit in 4096 bytes, stopping at the first that does not, then a `truncated` line
  counting what was left out; the worst report line still leaves room; the report is read as before;
- the parser: a message of today's wrapper has no facts; a failure's log tail, garbage, or more than
  4096 bytes is no message; unknown or malformed fact lines are skipped;
- the rest from the log: the block at the end of the container log is found (the last one, whole),
  `log_lines` says how many lines to read, and merging takes the log's facts only when the message's
  are their beginning and the counts agree;
- the wrapper, run for real by sh (dash) and busybox sh against the samples through a fake
  `buildctl-daemonless.sh`: its message is exactly what `encode_message` gives, byte for byte, its log
  block holds every fact, the build's exit code and output are kept, a failure writes no report and no
  facts; with more warnings than fit, the message is cut and the log completes it; shellcheck passes.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from servicebuild.buildlog import BaseImage, parse_plain, parse_warning
from servicebuild.cachemetrics import parse_cache_metrics
from servicebuild.render import job as render
from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport, parse_report
from servicebuild.report_budget import (
    BUDGET_AWK,
    FACTS_AWK,
    FACTS_MARKER,
    MAX_REPORTED_NAME,
    TRAILER_RESERVE,
    WRAPPER_SCRIPT,
    BuildFacts,
    BuildMessage,
    Omitted,
    encode_message,
    facts_from_build,
    merge_facts,
    parse_log_facts,
    parse_message,
)

SAMPLES = Path(__file__).parent / "buildkit_samples"
BUILDER_STEP = (
    "[build 1/4] FROM registry.test:5000/library/builder:bookworm"
    "@sha256:a37fcee07d6dde3c2961f810e13ae5e9ee6e361ff7c0d69b93167d0686d56be1"
)
BUSYBOX = (
    "registry.test:5000/library/busybox:latest"
    "@sha256:44acfeb4dad965ca5367acd53f99632818bc951be60702b622689ca9e5cd1213"
)
RUNTIME_STEP = f"[runtime 1/2] FROM {BUSYBOX}"
COPY_SOURCES = "[build 3/4] COPY util.h util.c calc.c ./"
DIGEST = "sha256:" + "ab12" * 16
REPORT_LINE = json.dumps(
    {"digest": DIGEST, "imageName": "r/x:1", "cacheMetrics": {"user_total": 6, "user_cached": 2}},
    separators=(",", ":"),
)


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def facts_of(build: str, *, metrics: bool = True) -> BuildFacts:
    cache = parse_cache_metrics(sample(f"{build}-cache-metrics.json")) if metrics else None
    return facts_from_build(parse_plain(sample(f"{build}-plain.log")), cache)


def many_warnings(count: int) -> BuildFacts:
    warnings = tuple(
        parse_warning(f"Rule{index:03}: a warning long enough to matter in the budget (line {index})")
        for index in range(count)
    )
    return BuildFacts(
        base_images=facts_of("calc-cold").base_images,
        first_miss=COPY_SOURCES,
        warnings=tuple(warning for warning in warnings if warning is not None),
    )


# The facts of the real builds


@pytest.mark.parametrize(
    ("build", "lines"),
    [
        pytest.param(
            "calc-calc-c-edited",
            (f"base {BUILDER_STEP}", f"base {RUNTIME_STEP}", f"miss {COPY_SOURCES}"),
            id="calc.c edited",
        ),
        pytest.param(
            "calc-cold",
            (f"base {RUNTIME_STEP}", f"base {BUILDER_STEP}", "miss [build 2/4] WORKDIR /src"),
            id="cold",
        ),
    ],
)
def test_the_facts_of_the_calc_builds(build: str, lines: tuple[str, ...]) -> None:
    facts = facts_of(build)
    assert facts.lines() == lines
    assert facts_of(build, metrics=False).lines() == lines  # the log alone agrees here
    assert not facts.truncated


def test_the_facts_of_the_checks_build() -> None:
    facts = facts_from_build(parse_plain(sample("checks-plain.log")))
    assert facts.base_images == (
        BaseImage(
            ref="registry.test:5000/library/busybox:latest",
            digest=BUSYBOX.split("@")[1],
            stage=None,
            platform=None,
            step=f"[1/2] FROM {BUSYBOX}",
        ),
    )
    assert facts.first_miss == '[2/2] RUN echo "$UNDEFINED_THING" > /x'
    assert [warning.rule for warning in facts.warnings] == [
        "FromAsCasing",
        "SecretsUsedInArgOrEnv",
        "LegacyKeyValueFormat",
        "JSONArgsRecommended",
    ]


def test_metrics_without_misses_mean_no_first_miss() -> None:
    metrics = parse_cache_metrics('{"user_total":6,"user_cached":6,"miss":0}\n')
    assert facts_from_build(parse_plain(sample("calc-cold-plain.log")), metrics).first_miss is None


# The message


def test_the_facts_of_a_real_build_fit_whole() -> None:
    facts = facts_of("calc-calc-c-edited")
    message = encode_message(REPORT_LINE, facts)
    assert message == "\n".join((REPORT_LINE, *facts.lines())) + "\n"
    parsed = parse_message(message)
    assert parsed == BuildMessage(report=parse_report(REPORT_LINE), facts=facts)  # type: ignore[arg-type]
    assert parsed.facts.log_lines == 4


def test_the_budget_keeps_the_priority_and_counts_what_it_left_out() -> None:
    facts = many_warnings(100)
    message = encode_message(REPORT_LINE, facts)
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    lines = message.splitlines()
    assert lines[0] == REPORT_LINE
    kept = lines[1:-1]
    assert kept == list(facts.lines()[: len(kept)])  # a prefix of the facts, in priority order
    assert [line.split()[0] for line in kept[:4]] == ["base", "base", "miss", "warn"]
    assert lines[-1] == f"truncated base=0 miss=0 warn={len(facts.lines()) - len(kept)}"
    parsed = parse_message(message)
    assert parsed is not None
    assert parsed.facts.truncated
    assert parsed.facts.omitted == Omitted(warn=len(facts.lines()) - len(kept))
    assert parsed.facts.log_lines == 1 + len(facts.lines())


def test_the_first_line_that_does_not_fit_ends_the_message() -> None:
    long_miss = "[build 3/4] RUN " + "x" * 4000
    facts = BuildFacts(facts_of("calc-cold").base_images, long_miss, many_warnings(1).warnings)
    lines = encode_message(REPORT_LINE, facts).splitlines()
    assert lines[1:] == [f"base {RUNTIME_STEP}", f"base {BUILDER_STEP}", "truncated base=0 miss=1 warn=1"]


def test_the_worst_report_line_still_leaves_room_for_facts() -> None:
    report_line = json.dumps(
        {
            "digest": DIGEST,
            "imageName": "n" * MAX_REPORTED_NAME,
            "cacheMetrics": {"user_total": 5, "user_cached": 4, "pad": "x" * 980},
            "cacheExported": False,
        },
        separators=(",", ":"),
    )
    assert len(report_line) < 2200
    message = encode_message(report_line, many_warnings(100))
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert len(message.encode()) > MAX_MESSAGE_BYTES - TRAILER_RESERVE - 100  # filled, not wasted
    parsed = parse_message(message)
    assert parsed is not None
    assert len(parsed.facts.base_images) == 2
    assert parsed.facts.first_miss == COPY_SOURCES
    assert parsed.report.image_name == "n" * MAX_REPORTED_NAME


def test_a_report_line_that_fills_the_message_leaves_every_fact_out() -> None:
    report_line = json.dumps({"digest": DIGEST, "imageName": "n" * 4000}, separators=(",", ":"))
    facts = facts_of("calc-cold")
    lines = encode_message(report_line, facts).splitlines()
    assert lines[1:] == ["truncated base=2 miss=1 warn=0"]


def test_multibyte_text_is_counted_in_bytes() -> None:
    warnings = tuple(parse_warning(f"Rule: {'é' * 300} {index}") for index in range(20))
    facts = BuildFacts(warnings=tuple(warning for warning in warnings if warning is not None))
    assert len(encode_message(REPORT_LINE, facts).encode()) <= MAX_MESSAGE_BYTES


# The parser


def test_a_message_of_todays_wrapper_has_no_facts() -> None:
    line = REPORT_LINE + "\n"
    assert parse_message(line) == BuildMessage(report=parse_report(line), facts=BuildFacts())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "error: failed to solve: process did not complete successfully\n",
        f"base {RUNTIME_STEP}\n" + REPORT_LINE,
        REPORT_LINE + "\n" + "warn x\n" * 1000,
        "\x00\xff",
        "{" * 5000,
    ],
)
def test_what_is_no_message(message: str | None) -> None:
    assert parse_message(message) is None


def test_unknown_and_malformed_fact_lines_are_skipped() -> None:
    message = "\n".join(
        (
            REPORT_LINE,
            "base [build 1/4] FROM builder:latest",  # no digest
            f"base {BUILDER_STEP}",
            "miss ",
            f"miss {COPY_SOURCES}",
            "miss [build 4/4] RUN later",  # only the first counts
            "warn ",
            "note something new",
            "truncated base=x",
            "",
        )
    )
    parsed = parse_message(message)
    assert parsed is not None
    assert parsed.facts == BuildFacts(
        base_images=facts_of("calc-calc-c-edited").base_images[:1], first_miss=COPY_SOURCES, omitted=None
    )


@pytest.mark.parametrize(
    ("line", "omitted"),
    [
        ("truncated base=1 miss=0 warn=7", Omitted(1, 0, 7)),
        ("truncated warn=2", Omitted(warn=2)),
        ("truncated", None),
        ("truncated base=-1", None),
        ("truncated other=1", None),
        ("truncated warn=9999999999", None),
    ],
)
def test_the_truncated_line(line: str, omitted: Omitted | None) -> None:
    parsed = parse_message(f"{REPORT_LINE}\n{line}\n")
    assert parsed is not None
    assert parsed.facts.omitted == omitted


# The rest, from the log


def log_block(facts: BuildFacts, before: str = "#14 DONE 0.5s\n") -> str:
    block = "".join(f"{line}\n" for line in facts.lines())
    return before + f"{FACTS_MARKER} {len(facts.lines())} {len(block.encode())}\n" + block


def test_the_log_block_completes_a_truncated_message() -> None:
    facts = many_warnings(100)
    message = parse_message(encode_message(REPORT_LINE, facts))
    assert message is not None
    log = log_block(facts)
    tail = "\n".join(log.splitlines()[-message.facts.log_lines :])  # what `kubectl logs --tail` gives
    from_log = parse_log_facts(tail)
    assert from_log == facts
    assert merge_facts(message.facts, from_log) == facts


def test_the_last_whole_block_counts() -> None:
    old, new = facts_of("calc-cold"), facts_of("calc-calc-c-edited")
    assert parse_log_facts(log_block(old) + log_block(new)) == new
    assert parse_log_facts(log_block(new).replace("\n", "\r\n")) == new
    assert parse_log_facts(log_block(new)[:-40]) is None  # cut: its last line is missing
    assert parse_log_facts(log_block(new)[:-5] + "extra") is None  # as many bytes, other words
    assert parse_log_facts(f"{FACTS_MARKER} x 1\nbase y\n") is None
    assert parse_log_facts(f"{FACTS_MARKER} 1\nbase y\n") is None
    assert parse_log_facts(f"{FACTS_MARKER} 1 11\nnot a fact\n") is None
    assert parse_log_facts(sample("calc-cold-plain.log")) is None
    assert parse_log_facts(None) is None


def test_merging_takes_the_log_only_when_it_continues_the_message() -> None:
    facts = many_warnings(100)
    message = parse_message(encode_message(REPORT_LINE, facts))
    assert message is not None
    truncated = message.facts
    assert merge_facts(truncated, None) == truncated
    assert merge_facts(truncated, many_warnings(101)) == truncated  # one more than the message counts
    assert merge_facts(truncated, facts_of("calc-cold")) == truncated  # another build's
    assert merge_facts(truncated, BuildFacts(omitted=Omitted(warn=1))) == truncated
    whole = facts_of("calc-cold")
    assert merge_facts(whole, many_warnings(3)) == whole  # nothing was left out: the message is complete


# The wrapper, run for real


FAKE_BUILDCTL = r"""#!/bin/sh
# Stands in for buildctl-daemonless.sh: BuildKit's progress on stderr, then the files buildctl writes.
cat "$FAKE_LOG" >&2
while [ $# -gt 0 ]; do
  case $1 in
    --metadata-file) [ "$FAKE_EXIT" -ne 0 ] || cp "$FAKE_METADATA" "$2" ;;
    --debug-json-cache-metrics) [ ! -e "$FAKE_METRICS" ] || cp "$FAKE_METRICS" "$2" ;;
  esac
  shift
done
echo "buildctl output on stdout"
exit "$FAKE_EXIT"
"""


def _shells() -> list[object]:
    # `sh` as the Job calls it (dash on Debian) and busybox's, the shell of the Alpine BuildKit image.
    return [pytest.param(["sh"], id="sh"), pytest.param(["busybox", "sh"], id="busybox")]


class Container:
    """The build container, with the Pod's files moved to tmp and busybox applets if asked."""

    def __init__(self, tmp_path: Path, shell: list[str], log: Path, metrics: Path | None) -> None:
        self.dir, self.shell = tmp_path, shell
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "buildctl-daemonless.sh"
        fake.write_text(FAKE_BUILDCTL)
        fake.chmod(0o755)
        if shell[0] == "busybox":  # the BuildKit image is Alpine: these are busybox applets there
            for applet in ("sed", "tail", "tee", "awk", "wc", "cat"):
                (bin_dir / applet).symlink_to(shutil.which("busybox") or "busybox")
        self.report = tmp_path / "termination-log"
        self.report.write_text("")
        self.metadata_file, self.metrics_file = tmp_path / "pod-metadata.json", tmp_path / "pod-metrics.json"
        self.env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            render.ENV_METADATA_FILE: str(self.metadata_file),
            render.ENV_CACHE_METRICS_FILE: str(self.metrics_file),
            render.ENV_REPORT_FILE: str(self.report),
            render.ENV_CACHE_EXPORT: "true",
            "BUILD_LOG_FILE": str(tmp_path / "progress.log"),
            "FAKE_LOG": str(log),
            "FAKE_METADATA": str(SAMPLES / "calc-calc-c-edited-metadata.json"),
            "FAKE_METRICS": str(metrics or tmp_path / "none"),
        }
        self.args = [
            "build",
            "--progress=plain",
            "--opt",
            "build-arg:X=$(touch pwned)",
            "--metadata-file",
            str(self.metadata_file),
            "--debug-json-cache-metrics",
            str(self.metrics_file),
        ]

    def run(self, exit_code: int = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.shell, "-c", WRAPPER_SCRIPT, render.WRAPPER_NAME, *self.args],
            env={**self.env, "FAKE_EXIT": str(exit_code)},
            cwd=self.dir,
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.mark.parametrize("shell", _shells())
@pytest.mark.parametrize("build", ["calc-calc-c-edited", "calc-cold"])
def test_the_wrapper_writes_the_report_and_the_facts(tmp_path: Path, shell: list[str], build: str) -> None:
    container = Container(
        tmp_path, shell, SAMPLES / f"{build}-plain.log", SAMPLES / f"{build}-cache-metrics.json"
    )
    result = container.run()
    assert result.returncode == 0, result.stderr
    message = container.report.read_text()
    report_line = message.splitlines()[0]
    assert message == encode_message(report_line, facts_of(build))  # byte for byte
    parsed = parse_message(message)
    assert parsed is not None
    assert parsed.report == BuildReport(
        digest="sha256:033e3f583adca7e7a04a24bbbac2726816774384c9daf6c1f11b181706183f5f",
        image_name="registry.test:5000/samples/calc:calc-c-edited",
        cached_steps=int(json.loads(report_line)["cacheMetrics"]["user_cached"]),
        total_steps=6,
        cache_exported=True,
    )
    assert parsed.facts == facts_of(build)
    # The container log: the whole build log, buildctl's stdout, then the block of facts.
    assert result.stdout == ""
    assert result.stderr.startswith(sample(f"{build}-plain.log"))
    assert "buildctl output on stdout\n" in result.stderr
    assert parse_log_facts(result.stderr) == facts_of(build)
    assert result.stderr.endswith(log_block(facts_of(build), before=""))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("shell", _shells())
def test_the_wrapper_without_cache_metrics_takes_the_first_uncached_step(
    tmp_path: Path, shell: list[str]
) -> None:
    container = Container(tmp_path, shell, SAMPLES / "checks-plain.log", None)
    result = container.run()
    assert result.returncode == 0, result.stderr
    message = container.report.read_text()
    facts = facts_from_build(parse_plain(sample("checks-plain.log")))
    assert message == encode_message(message.splitlines()[0], facts)
    assert json.loads(message.splitlines()[0])["cacheMetrics"] is None
    assert len(facts.warnings) == 4


@pytest.mark.parametrize("shell", _shells())
def test_the_wrapper_cuts_what_does_not_fit_and_the_log_completes_it(
    tmp_path: Path, shell: list[str]
) -> None:
    warns = "".join(
        f"#1 WARN: Rule{index:03}: a warning long enough to matter in the budget (line {index})\n"
        for index in range(100)
    )
    log = tmp_path / "many-warnings.log"
    log.write_text(sample("calc-cold-plain.log").replace("#1 DONE 0.0s\n", warns + "#1 DONE 0.0s\n", 1))
    container = Container(tmp_path, shell, log, SAMPLES / "calc-cold-cache-metrics.json")
    result = container.run()
    assert result.returncode == 0, result.stderr
    message_text = container.report.read_text()
    complete = facts_from_build(
        parse_plain(log.read_text()), parse_cache_metrics(sample("calc-cold-cache-metrics.json"))
    )
    assert message_text == encode_message(message_text.splitlines()[0], complete)
    assert len(message_text.encode()) <= MAX_MESSAGE_BYTES
    message = parse_message(message_text)
    assert message is not None
    assert message.facts.truncated
    tail = "\n".join(result.stderr.splitlines()[-message.facts.log_lines :])
    assert merge_facts(message.facts, parse_log_facts(tail)) == complete
    assert len(complete.warnings) == 100


@pytest.mark.parametrize("exit_code", [1, 7])
@pytest.mark.parametrize("shell", _shells())
def test_a_failed_build_keeps_its_exit_code_and_writes_no_report_and_no_facts(
    tmp_path: Path, shell: list[str], exit_code: int
) -> None:
    container = Container(
        tmp_path, shell, SAMPLES / "calc-cold-plain.log", SAMPLES / "calc-cold-cache-metrics.json"
    )
    result = container.run(exit_code)
    assert result.returncode == exit_code
    assert container.report.read_text() == ""
    assert FACTS_MARKER not in result.stderr  # the log tail must end with BuildKit's error
    assert result.stderr.endswith("buildctl output on stdout\n")


def test_the_wrapper_passes_shellcheck_and_its_awk_fits_in_single_quotes() -> None:
    assert "'" not in FACTS_AWK
    assert "'" not in BUDGET_AWK
    result = subprocess.run(
        [shutil.which("shellcheck") or "shellcheck", "--shell=sh", "-"],
        input=WRAPPER_SCRIPT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
