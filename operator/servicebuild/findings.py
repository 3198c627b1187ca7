"""Dockerfile findings as the status shows them: the analysis of a ConfigMap context before its Job,
BuildKit's build checks from the build's report, `spec.checks`, and the condition `DockerfileClean`. Pure.

The findings of a build are fixed in two steps. When its Job is about to be created, the operator's own rules
(`servicebuild.dockerfile`) run on a ConfigMap context; with `spec.checks.policy: Fail` an `error` finding
stops the build there. When the build succeeds, BuildKit's build checks (the `warn` lines of its report)
join them. A git context is not fetched by the operator, so its findings are BuildKit's checks only.

A ConfigMap context is read by `buildcontext` (an archive that unpacks to more than its limit is built
unchecked); `context_findings` takes any context as its files.
"""

import re
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
from servicebuild.buildcontext import context_files, relative
from servicebuild.buildlog import BuildWarning
from servicebuild.dockerfile import RULE_NAMES, BuildContext, DockerfileError, analyze
from servicebuild.failures import Failure, Reason

DOCKERFILE_CLEAN = "DockerfileClean"
"""A warning condition: False when the build's Dockerfile has an `error` or `warning` finding."""
MAX_READ_FILE_BYTES = 64 * 1024
"""The most of one file the rules read (the Dockerfile, `.dockerignore`, `.npmrc`)."""
_SEVERITY_ORDER = {FindingSeverity.ERROR: 0, FindingSeverity.WARNING: 1, FindingSeverity.INFO: 2}
_SECRET_HOLDERS = re.compile(r"(^|/)(\.npmrc|\.pypirc|[^/]+\.pem)$")
"""Files whose text tells whether they hold a secret; the rest of the context is known by path only."""
BUILD_CHECK_DOCS = "https://docs.docker.com/go/dockerfile/rule/{}/"
"""Where Docker documents a build check and its fix; the rule's name in kebab case."""

ConditionValue = tuple[ConditionStatus, str, str]


def configmap_findings(spec: ServiceBuildSpec, configmap: Mapping[str, Any]) -> tuple[Finding, ...]:
    """The findings of a ConfigMap context; none when its archive cannot be read."""
    source = spec.source.config_map
    if source is None:
        return ()
    files = context_files(configmap.get("data") or {}, configmap.get("binaryData") or {}, source.archive)
    return context_findings(spec, files) if files is not None else ()


def context_findings(spec: ServiceBuildSpec, files: Mapping[str, bytes]) -> tuple[Finding, ...]:
    """The findings of a context given as its files (relative paths), less `spec.checks.skip`; none when
    the Dockerfile is missing or does not parse (BuildKit then fails the build with its own message)."""
    dockerfile = relative(spec.dockerfile)
    ignore_file = f"{dockerfile}.dockerignore"
    named = {dockerfile, ignore_file, ".dockerignore"}
    texts = {
        path: content[:MAX_READ_FILE_BYTES].decode(errors="replace")
        for path, content in files.items()
        if path in named or _SECRET_HOLDERS.search(path)
    }
    if dockerfile not in texts:
        return ()
    context = BuildContext.of(files, texts, texts.get(ignore_file, texts.get(".dockerignore", "")))
    try:
        found = analyze(texts[dockerfile], target=spec.target, build_args=spec.build_args, context=context)
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
