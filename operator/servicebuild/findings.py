"""Dockerfile findings as the status shows them: the analysis of a ConfigMap context before its Job,
BuildKit's build checks from the build's report, `spec.checks`, and the condition `DockerfileClean`. Pure.

The findings of a build are fixed in two steps. When its Job is about to be created, the operator's own rules
(`servicebuild.dockerfile`) run on a ConfigMap context; with `spec.checks.policy: Fail` an `error` finding
stops the build there. When the build succeeds, BuildKit's build checks (the `warn` lines of its report)
join them. A git context is not fetched by the operator, so its findings are BuildKit's checks only.

A ConfigMap archive is unpacked in memory, at most `MAX_UNPACKED_BYTES`: a larger one is built unchecked
rather than letting one ConfigMap hold the operator's memory.
"""

import base64
import binascii
import io
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from servicebuild.api.models import (
    MAX_FINDINGS,
    CheckPolicy,
    Checks,
    ConditionStatus,
    Finding,
    FindingSeverity,
    ServiceBuildSpec,
)
from servicebuild.buildlog import BuildWarning
from servicebuild.dockerfile import RULE_NAMES, BuildContext, DockerfileError, analyze
from servicebuild.failures import Failure, Reason

DOCKERFILE_CLEAN = "DockerfileClean"
"""A warning condition: False when the build's Dockerfile has an `error` or `warning` finding."""
MAX_UNPACKED_BYTES = 32 * 1024 * 1024
"""The most a ConfigMap archive may unpack to for the operator to check it."""
MAX_READ_FILE_BYTES = 64 * 1024
"""The most of one file the rules read (the Dockerfile, `.dockerignore`, `.npmrc`)."""
_SEVERITY_ORDER = {FindingSeverity.ERROR: 0, FindingSeverity.WARNING: 1, FindingSeverity.INFO: 2}
_SECRET_HOLDERS = re.compile(r"(^|/)(\.npmrc|\.pypirc|[^/]+\.pem)$")
"""Files whose text tells whether they hold a secret; the rest of the context is known by path only."""
BUILD_CHECK_DOCS = "https://docs.docker.com/go/dockerfile/rule/{}/"
"""Where Docker documents a build check and its fix; the rule's name in kebab case."""

ConditionValue = tuple[ConditionStatus, str, str]


def configmap_findings(spec: ServiceBuildSpec, configmap: Mapping[str, Any]) -> tuple[Finding, ...]:
    """The findings of a ConfigMap context, less `spec.checks.skip`; none when the Dockerfile is missing or
    does not parse (BuildKit then fails the build with its own message) or the archive is too large."""
    source = spec.source.config_map
    if source is None:
        return ()
    ignore_file = f"{spec.dockerfile}.dockerignore"
    files = _configmap_files(configmap, source.archive, {spec.dockerfile, ignore_file, ".dockerignore"})
    if files is None or spec.dockerfile not in files.texts:
        return ()
    texts = files.texts
    context = BuildContext.of(files.paths, texts, texts.get(ignore_file, texts.get(".dockerignore", "")))
    try:
        found = analyze(
            texts[spec.dockerfile], target=spec.target, build_args=spec.build_args, context=context
        )
    except DockerfileError:
        return ()
    return _kept(
        (
            Finding(
                rule=finding.rule.value,
                severity=FindingSeverity(finding.severity.value),
                stage=finding.stage,
                line=finding.line,
                message=finding.message,
            )
            for finding in found
        ),
        spec.checks,
    )


def with_build_checks(
    earlier: Iterable[Finding], warnings: Iterable[BuildWarning], checks: Checks
) -> tuple[Finding, ...]:
    """The operator's own findings of `earlier` and BuildKit's build checks, each once, less the skipped."""
    own = [finding for finding in earlier if finding.rule in RULE_NAMES]
    reported = [
        Finding(
            rule=warning.rule,
            severity=FindingSeverity.WARNING,
            line=warning.line,
            message=f"{warning.message.rstrip('.')}. See {BUILD_CHECK_DOCS.format(_kebab(warning.rule))}",
        )
        for warning in warnings
        if warning.rule is not None
    ]
    return _kept([*own, *dict.fromkeys(reported)], checks)


def blocking_failure(findings: Iterable[Finding], checks: Checks, dockerfile: str) -> Failure | None:
    """`DockerfileCheckFailed` naming the first `error` finding when the policy is `Fail`; else None."""
    if checks.policy != CheckPolicy.FAIL:
        return None
    error = next((finding for finding in findings if finding.severity == FindingSeverity.ERROR), None)
    if error is None:
        return None
    return Failure(
        Reason.DOCKERFILE_CHECK_FAILED,
        f"spec.checks.policy is Fail and {error.rule} is an error: {dockerfile} line {error.line}: "
        f"{error.message}",
    )


def clean_condition(findings: Iterable[Finding]) -> ConditionValue:
    """`DockerfileClean`: False with the worst finding's rule as its reason; True when only `info` ones
    (or none) are left."""
    ordered = list(findings)
    counts = dict.fromkeys(FindingSeverity, 0)
    for finding in ordered:
        counts[finding.severity] += 1
    summary = ", ".join(f"{count} {severity.value}" for severity, count in counts.items() if count)
    if not ordered:
        return ("True", "NoFindings", "No findings about the Dockerfile.")
    worst = ordered[0]
    if worst.severity == FindingSeverity.INFO:
        return ("True", "OnlyInfoFindings", f"Findings: {summary}; see status.findings.")
    where = f" line {worst.line}" if worst.line is not None else ""
    return ("False", worst.rule, f"Findings: {summary}. The worst,{where}: {worst.message}")


def _kept(findings: Iterable[Finding], checks: Checks) -> tuple[Finding, ...]:
    """Less the skipped rules, worst first then by line, at most `MAX_FINDINGS`."""
    skipped = set(checks.skip)
    kept = [finding for finding in findings if finding.rule not in skipped]
    kept.sort(key=lambda finding: (_SEVERITY_ORDER[finding.severity], finding.line or 0))
    return tuple(kept[:MAX_FINDINGS])


def _kebab(rule: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", rule).lower()


class _ContextFiles:
    """The paths of a context and the text of the files the rules read: `named` ones and secret holders."""

    def __init__(self, named: set[str]) -> None:
        self.named = named
        self.paths: list[str] = []
        self.texts: dict[str, str] = {}

    def wants(self, path: str) -> bool:
        return _relative(path) in self.named or _SECRET_HOLDERS.search(_relative(path)) is not None

    def add(self, path: str, content: bytes | str | None) -> None:
        self.paths.append(_relative(path))
        if content is not None and self.wants(path):
            raw = content.encode() if isinstance(content, str) else content
            self.texts[_relative(path)] = raw[:MAX_READ_FILE_BYTES].decode(errors="replace")


def _relative(path: str) -> str:
    return posixpath.normpath("/" + path).lstrip("/")


def _configmap_files(
    configmap: Mapping[str, Any], archive: str | None, named: set[str]
) -> _ContextFiles | None:
    """The context the build Pod makes of the ConfigMap: its keys as files, or its archive unpacked."""
    data: Mapping[str, str] = configmap.get("data") or {}
    binary: Mapping[str, str] = configmap.get("binaryData") or {}
    files = _ContextFiles(named)
    if archive is None:
        for key, text in data.items():
            files.add(key, text)
        for key, encoded in binary.items():
            files.add(key, _decoded(encoded) if files.wants(key) else None)
        return files
    unpacked = _gunzip(binary.get(archive, ""))
    if unpacked is None:
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(unpacked), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    reader = tar.extractfile(member) if files.wants(member.name) else None
                    files.add(member.name, reader.read(MAX_READ_FILE_BYTES) if reader else None)
    except tarfile.TarError:
        return None
    return files


def _decoded(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None


def _gunzip(encoded: str) -> bytes | None:
    """The archive's tar stream; None when it is no gzip or unpacks to more than `MAX_UNPACKED_BYTES`."""
    compressed = _decoded(encoded)
    if compressed is None:
        return None
    decompressor = zlib.decompressobj(wbits=31)
    try:
        unpacked = decompressor.decompress(compressed, MAX_UNPACKED_BYTES)
    except zlib.error:
        return None
    return unpacked if not decompressor.unconsumed_tail else None
