"""Why a build failed, in words a user can act on; pure and total (any input gives an answer).

A failed build is classified from its Job, its Pod (the typed views of `servicebuild.jobs`) and the build
container's termination message, which on failure is the tail of the container log
(`FallbackToLogsOnError`). The log ends with buildctl's own error line (`error: failed to solve: …`,
`cmd/buildctl/main.go`; Docker's buildx writes `ERROR:`), and that line decides the reason: earlier
lines may hold errors BuildKit recovered from, such as a cold cache import.
"""

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from servicebuild.jobs import BuildJob, BuildPod


class Reason(StrEnum):
    """The reasons a build ends `Stalled` with, besides those the git and registry gateways' errors name
    (`GitAuthFailed`, `InvalidGitSecret`, `ManifestNotFound`, …)."""

    DOCKERFILE_NOT_FOUND = "DockerfileNotFound"
    DOCKERFILE_PARSE_ERROR = "DockerfileParseError"
    TARGET_STAGE_NOT_FOUND = "TargetStageNotFound"
    BUILD_STEP_FAILED = "BuildStepFailed"
    SOURCE_NOT_FOUND = "SourceNotFound"
    GIT_AUTH_FAILED = "GitAuthFailed"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    BASE_IMAGE_NOT_FOUND = "BaseImageNotFound"
    SBOM_SCANNER_NOT_FOUND = "SBOMScannerNotFound"
    """BuildKit could not pull the SBOM scanner image (SERVICEBUILD_SBOM_SCANNER_IMAGE)."""
    REGISTRY_AUTH_DENIED = "RegistryAuthDenied"
    PUSH_FAILED = "PushFailed"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    UNSCHEDULABLE = "Unschedulable"
    BUILDER_IMAGE_PULL_FAILED = "BuilderImagePullFailed"
    BUILDER_START_FAILED = "BuilderStartFailed"
    BUILDER_UNAVAILABLE = "BuilderUnavailable"
    OOM_KILLED = "OOMKilled"
    EVICTED = "Evicted"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    PENDING_TIMEOUT = "PendingTimeout"
    """The build Pod did not start in time; `classify_pending` says why in its message."""
    REPORT_MISSING = "ReportMissing"
    """The Job completed but its Pod, and so the build report, was gone before it was read."""
    INVALID_SPEC = "InvalidSpec"
    """Set by the reconciler before any Job exists, as are the next four."""
    REGISTRY_NOT_ALLOWED = "RegistryNotAllowed"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a password
    INVALID_PUSH_SECRET = "InvalidPushSecret"  # noqa: S105 - a reason, not a password
    JOB_REJECTED = "JobRejected"
    DOCKERFILE_CHECK_FAILED = "DockerfileCheckFailed"
    """An `error` finding with `spec.checks.policy: Fail`."""
    SIZE_BUDGET_EXCEEDED = "SizeBudgetExceeded"
    """An image over `spec.sizeBudget` with `action: Fail`: pushed by digest, not tagged."""
    BUILD_FAILED = "BuildFailed"
    """Anything not recognised; the message quotes BuildKit."""


TRANSIENT_REASONS = frozenset(
    {Reason.REGISTRY_UNAVAILABLE, Reason.SOURCE_UNAVAILABLE, Reason.EVICTED, Reason.BUILDER_UNAVAILABLE}
)
"""Failures of the moment, not of the spec: the same build may well succeed when retried."""


@dataclass(frozen=True)
class Failure:
    """A classified failure: the reason, what to do about it, and the failing Dockerfile step."""

    reason: str
    """A `Reason`, or the reason a gateway's error names (e.g. `GitAuthFailed`, `ManifestNotFound`)."""
    message: str
    failed_step: str | None = None

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS


# `--progress=plain` repeats the failing step's output under ` > [stage 2/4] RUN make:`.
_FAILED_STEP_RE = re.compile(r"^\s*> (\[[^\]]+\] .+?):?\s*$", re.MULTILINE)
# git's own stderr lines may start with `error:` too; buildctl wraps every solve error in `failed to solve`.
_SOLVE_ERROR_RE = re.compile(r"^(?:error|ERROR): (?=failed to (?:solve|build))", re.MULTILINE)
_FINAL_ERROR_RE = re.compile(r"^(?:error|ERROR): ", re.MULTILINE)
_STEP_ERROR_RE = re.compile(r"^#\d+ ERROR: (.+)$", re.MULTILINE)
_CACHE_IMPORT_ERROR = "failed to configure registry cache importer"
_ERROR_PREFIX_RE = re.compile(r"^(?:failed to build: )?(?:failed to solve: )?")
_MAX_DETAIL = 400

_DOCKERFILE_NOT_FOUND_RE = re.compile(r"failed to read dockerfile: open (\S+): no such file or directory")
_DOCKERFILE_PARSE_RE = re.compile(
    r"dockerfile parse error on line \d+: [^\n]+|unknown instruction: |file with no instructions"
    r"|the Dockerfile cannot be empty|unterminated heredoc"
)
_TARGET_STAGE_RE = re.compile(r"target stage \S+ could not be found")
_PROCESS_FAILED_RE = re.compile(r"process \"(.+?)\" did not complete successfully: exit code: (\d+)")
_KILLED_EXIT_CODE = "137"
"""128 + SIGKILL: in a build step, almost always the kernel's OOM killer."""

_GIT_ERROR_RE = re.compile(
    r"failed to fetch remote|git stderr:|error fetching default branch|could not find default branch"
    r"|repository does not contain ref|failed to checkout remote|failed to open subdir"
)
_GIT_STDERR_RE = re.compile(r"git stderr:\s*(.+?)\s*(?::\s*exit status \d+\s*)?$", re.DOTALL)
_GIT_AUTH_RE = re.compile(
    r"Authentication failed|could not read (?:Username|Password)|Permission denied \(publickey"
    r"|Invalid username or password|HTTP Basic: Access denied|requested URL returned error: 40[13]"
)
_GIT_NOT_FOUND_RE = re.compile(
    r"repository '[^']*' not found|Repository not found|does not appear to be a git repository"
    r"|couldn't find remote ref|repository does not contain ref|not our ref|reference is not a tree"
    r"|unadvertised object|requested URL returned error: 404|could not find default branch"
    r"|failed to open subdir"
)
_GIT_UNAVAILABLE_RE = re.compile(
    r"Could not resolve host|Failed to connect to|Connection timed out|Connection refused"
    r"|Connection reset|requested URL returned error: 5\d\d",
    re.IGNORECASE,
)

# gRPC's words when buildctl cannot reach the daemon, or the connection breaks mid-build.
_BUILDER_UNREACHABLE_RE = re.compile(
    r"(?:rpc error: code = Unavailable|Unavailable: connection error|connection error: desc|"
    r"transport: Error while dialing|error reading server preface|connection closed before server preface)"
    r"[^\n]*"
)
_PUSH_ERROR = "failed to push"
_PULL_ERROR_RE = re.compile(r"failed to resolve source metadata for|failed to authorize|failed to do request")
_BASE_IMAGE_STEP = "[internal] load metadata for "
_REGISTRY_UNAVAILABLE_RE = re.compile(
    r"connection refused|i/o timeout|TLS handshake timeout|no such host|connection reset by peer"
    r"|network is unreachable|: 5\d\d [A-Z]|: 429 Too Many Requests",
    re.IGNORECASE,
)
_REGISTRY_AUTH_RE = re.compile(
    r": 40[13] (?:Unauthorized|Forbidden)|unauthorized|denied|insufficient_scope|failed to authorize"
    r"|failed to fetch (?:oauth|anonymous) token|authentication required|no basic auth credentials",
    re.IGNORECASE,
)
# Go's net/http, when a registry answers an HTTPS request in plain HTTP; containerd quotes the URL:
# `failed to do request: Head "https://<host>/v2/…": http: server gave HTTP response to HTTPS client`.
_PLAIN_HTTP_REGISTRY_RE = re.compile(
    r'"https://([^/"]+)/v2/[^"]*": http: server gave HTTP response to HTTPS client'
)
_PULLED_REF_RE = re.compile(r"failed to resolve source metadata for (\S+?): ")
_BASE_IMAGE_NOT_FOUND_RE = re.compile(
    r": not found$|no match for platform in manifest|pull access denied, repository does not exist",
    re.MULTILINE,
)

# buildctl-daemonless.sh gives up on a daemon that never listens, then prints the daemon's log.
_BUILDER_START_RE = re.compile(
    r"^.*\[rootlesskit:parent\] error: .*$|^could not connect to \S+ after \d+ trials$", re.MULTILINE
)

_IMAGE_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


def failed_step(log: str) -> str | None:
    """The Dockerfile step BuildKit reports as failing, if the log names one."""
    steps = _FAILED_STEP_RE.findall(log)
    return steps[-1] if steps else None


def classify(job: BuildJob, pod: BuildPod | None, log: str | None) -> Failure:
    """Why the build of a failed Job failed; `log` is the build container's termination message."""
    text = log if isinstance(log, str) else ""
    step = failed_step(text)
    failed = job.failed
    if failed is not None and failed.reason == "DeadlineExceeded":
        failure = _deadline_exceeded(pod)
    else:
        failure = (
            _evicted(pod)
            or _oom_killed(pod)
            or _builder_start_failure(text)
            or _from_log(text, step, job.sbom_scanner)
            or Failure(Reason.BUILD_FAILED, _without_buildkit_error(job, pod, text))
        )
    return replace(failure, failed_step=step)


def classify_run(log: str, sbom_scanner: str | None) -> Failure:
    """Why a build buildctl ran against a builder pool failed, from its output."""
    step = failed_step(log)
    unreachable = _BUILDER_UNREACHABLE_RE.search(log)
    if unreachable is not None and step is None:
        return Failure(
            Reason.BUILDER_UNAVAILABLE,
            f"The builder pool's BuildKit daemon could not be reached ({_detail(unreachable.group(0))});"
            " the build is retried.",
        )
    failure = _from_log(log, step, sbom_scanner) or Failure(
        Reason.BUILD_FAILED,
        f"buildctl failed without a BuildKit error: {_detail(_last_line(log) or 'no output')}",
    )
    return replace(failure, failed_step=step)


def _last_line(text: str) -> str | None:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), None)


def classify_pending(pod: BuildPod | None) -> Failure:
    """What keeps the build Pod from starting, in the scheduler's or the kubelet's words plus advice."""
    unscheduled = pod.condition("PodScheduled") if pod is not None else None
    if unscheduled is not None:
        why = f"{unscheduled.reason or 'Unschedulable'}: {unscheduled.message}".rstrip(": ")
        return Failure(
            Reason.UNSCHEDULABLE,
            f"no node can run the build Pod ({why}): lower spec.resources.requests, check"
            " spec.nodeSelector, tolerations and affinity, or add nodes.",
        )
    for container in [*pod.init_containers, *pod.containers] if pod is not None else []:
        if container.state != "waiting" or container.reason in {"", "PodInitializing"}:
            continue
        why = f"{container.name}: {container.reason}: {container.message}".rstrip(": ")
        if container.reason in _IMAGE_PULL_WAITING:
            return Failure(
                Reason.BUILDER_IMAGE_PULL_FAILED,
                f"the node could not pull the builder image ({why}): check spec.builderImage (or the"
                " operator's SERVICEBUILD_BUILDKIT_IMAGE), that it exists and that nodes may pull it"
                " (spec.serviceAccountName can carry image pull secrets).",
            )
        return Failure(Reason.PENDING_TIMEOUT, why)
    return Failure(Reason.PENDING_TIMEOUT, "no Pod started" if pod is None else "the Pod has not started")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret value, and its base64 form, replaced by `***`."""
    forms: set[str] = set()
    for secret in secrets:
        for value in {secret, secret.strip()} - {""}:
            encoded = base64.b64encode(value.encode()).decode()
            forms.update({value, encoded, encoded.rstrip("=")})
    if not forms:
        return text
    # Longest first, in one pass: a secret containing another is replaced whole, and `***` never again.
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, "***", text)


def _deadline_exceeded(pod: BuildPod | None) -> Failure:
    if pod is not None and pod.phase == "Pending":
        return Failure(
            Reason.DEADLINE_EXCEEDED,
            "spec.timeout ran out before the build Pod started, so the build was stopped: "
            f"{classify_pending(pod).message}",
        )
    return Failure(
        Reason.DEADLINE_EXCEEDED,
        "The build ran longer than spec.timeout and was stopped: raise spec.timeout, or make the build"
        " faster (a warm registry cache helps).",
    )


def _evicted(pod: BuildPod | None) -> Failure | None:
    if pod is None:
        return None
    disruptions = [
        f"{condition.reason or 'DisruptionTarget'}: {condition.message}".rstrip(": ")
        for condition in pod.conditions
        if condition.type == "DisruptionTarget"
    ]
    if pod.reason == "Evicted":
        disruptions.insert(0, f"Evicted: {pod.message}".rstrip(": "))
    if not disruptions:
        return None
    return Failure(
        Reason.EVICTED,
        f"Kubernetes stopped the build Pod ({disruptions[0]}); the build itself did not fail and is worth"
        " retrying.",
    )


def _oom_killed(pod: BuildPod | None) -> Failure | None:
    for container in [*pod.init_containers, *pod.containers] if pod is not None else []:
        if container.state == "terminated" and container.reason == "OOMKilled":
            limit = container.memory_limit
            return Failure(
                Reason.OOM_KILLED,
                f"The container {container.name} ran out of memory{f' (limit {limit})' if limit else ''}"
                " and was killed: raise spec.resources.limits.memory, or make the build use less (fewer"
                " parallel jobs in a step).",
            )
    return None


def _builder_start_failure(log: str) -> Failure | None:
    lines = _BUILDER_START_RE.findall(log)
    if not lines:
        return None
    # rootlesskit's own line says why; the script's "could not connect" line only that it gave up.
    why = next((line for line in lines if "rootlesskit" in line), lines[0])
    return Failure(
        Reason.BUILDER_START_FAILED,
        f"BuildKit could not start in the build Pod ({_detail(why)}): rootless BuildKit needs user"
        " namespaces, and nodes refuse them when user.max_user_namespaces is 0 or, on Ubuntu 24.04+ hosts,"
        " when kernel.apparmor_restrict_unprivileged_userns=1 (set it to 0, or allow `userns` to rootlesskit"
        " in an AppArmor profile). It also needs Unconfined seccomp and AppArmor profiles, which Pod"
        " Security allows only at the privileged level; ask the cluster's administrators.",
    )


def _from_log(log: str, step: str | None, sbom_scanner: str | None) -> Failure | None:
    error = _final_error(log)
    if error is None:
        return None
    return (
        _dockerfile_failure(error)
        or _git_failure(error)
        or _plain_http_registry_failure(error)
        or _sbom_scanner_failure(error, sbom_scanner)
        or _registry_failure(error, step)
        or _step_failure(error, step)
    )


def _final_error(log: str) -> str | None:
    """buildctl's closing error, with the lines that belong to it (git's stderr spans several)."""
    finals = list(_SOLVE_ERROR_RE.finditer(log)) or list(_FINAL_ERROR_RE.finditer(log))
    if finals:
        return log[finals[-1].end() :].strip()
    errors = [error for error in _STEP_ERROR_RE.findall(log) if _CACHE_IMPORT_ERROR not in error]
    return errors[-1].strip() if errors else None


def _without_buildkit_error(job: BuildJob, pod: BuildPod | None, log: str) -> str:
    """A failure whose log holds no BuildKit error: the init container failed, or the Pod is gone."""
    for container in pod.init_containers if pod is not None else ():
        if container.exit_code not in (None, 0):
            return (
                f"Copying the ConfigMap into the build context failed (container {container.name},"
                f" exit code {container.exit_code}): check that spec.source.configMap.archive is a gzipped"
                " tar archive."
            )
    if pod is None:
        return "The build failed and its Pod is gone, and its log with it: rebuild to see why."
    last_line = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), None)
    if last_line is None:
        last_line = next((c.message for c in job.conditions if c.message), "no log")
    return f"The build container failed without a BuildKit error ({_detail(last_line)}): see its log."


def _detail(error: str) -> str:
    """The error on one line, without BuildKit's generic wrapping, short enough for a condition."""
    flat = _ERROR_PREFIX_RE.sub("", " ".join(error.split()))
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


def _dockerfile_failure(error: str) -> Failure | None:
    if match := _DOCKERFILE_NOT_FOUND_RE.search(error):
        return Failure(
            Reason.DOCKERFILE_NOT_FOUND,
            f"BuildKit found no Dockerfile `{match.group(1)}` in the build context: check spec.dockerfile"
            " (a path inside the context: inside spec.source.git.contextDir, or a key of the ConfigMap).",
        )
    if _DOCKERFILE_PARSE_RE.search(error):
        return Failure(
            Reason.DOCKERFILE_PARSE_ERROR,
            f"The Dockerfile is invalid ({_detail(error)}): fix it at that line; status.logTail shows it.",
        )
    if _TARGET_STAGE_RE.search(error):
        return Failure(
            Reason.TARGET_STAGE_NOT_FOUND,
            f"{_detail(error)}: set spec.target to the name of a stage (`FROM … AS <name>`), or leave it"
            " out to build the last stage.",
        )
    return None


def _git_failure(error: str) -> Failure | None:
    if not _GIT_ERROR_RE.search(error):
        return None
    # What git itself said; BuildKit's wrapping around it (`failed to fetch remote <url>: git stderr:`
    # before, `: exit status 128` after) says only that git failed.
    stderr = _GIT_STDERR_RE.search(error)
    detail = _detail(stderr.group(1) if stderr else error)
    if _GIT_AUTH_RE.search(error):
        return Failure(
            Reason.GIT_AUTH_FAILED,
            f"The git server refused BuildKit access to the repository ({detail}): check that"
            " spec.source.git.authSecret exists and its token or key may read the repository.",
        )
    if _GIT_NOT_FOUND_RE.search(error):
        return Failure(
            Reason.SOURCE_NOT_FOUND,
            f"BuildKit did not find the git source ({detail}): check spec.source.git.url, revision and"
            " contextDir.",
        )
    if _GIT_UNAVAILABLE_RE.search(error):
        return Failure(
            Reason.SOURCE_UNAVAILABLE,
            f"BuildKit could not reach the git server ({detail}); this is usually temporary and worth"
            " retrying.",
        )
    return Failure(Reason.BUILD_FAILED, f"BuildKit could not fetch the git source: {detail}.")


def _plain_http_registry_failure(error: str) -> Failure | None:
    match = _PLAIN_HTTP_REGISTRY_RE.search(error)
    if match is None:
        return None
    host, detail = match.group(1), _detail(error)
    if _PUSH_ERROR in error:
        return Failure(
            Reason.PUSH_FAILED,
            f"The registry {host} answers in plain HTTP, but BuildKit pushed over HTTPS ({detail}): add"
            f" {host} to the operator's SERVICEBUILD_INSECURE_REGISTRIES (comma-separated host[:port])"
            " so that pushes and the registry cache use plain HTTP, or serve the registry over HTTPS.",
        )
    # Anything else is a pull for the build (FROM, COPY --from): the registry.insecure that setting adds
    # to buildctl's output and cache flags does not reach it; the daemon's own configuration would.
    return Failure(
        Reason.BUILD_FAILED,
        f"The registry {host} answers in plain HTTP, but BuildKit pulled a base image from it over HTTPS"
        f" ({detail}): the operator's SERVICEBUILD_INSECURE_REGISTRIES makes pushes and the registry cache"
        " use plain HTTP, not FROM. Serve the registry over HTTPS, or copy the base image to one that is.",
    )


def _sbom_scanner_failure(error: str, scanner: str | None) -> Failure | None:
    """The scanner image not found: BuildKit says it in the words of a missing base image, naming it."""
    if scanner is None or not _BASE_IMAGE_NOT_FOUND_RE.search(error):
        return None
    pulled = {match.group(1) for match in _PULLED_REF_RE.finditer(error)}
    if not pulled & _reference_forms(scanner):
        return None
    return Failure(
        Reason.SBOM_SCANNER_NOT_FOUND,
        f"BuildKit could not pull the SBOM scanner image {scanner} ({_detail(error)}): the operator's"
        " SERVICEBUILD_SBOM_SCANNER_IMAGE must name an image that exists and that BuildKit may pull (a"
        " mirror of docker.io/docker/buildkit-syft-scanner); or build without one (spec.attestations.sbom:"
        " false).",
    )


def _reference_forms(reference: str) -> set[str]:
    """`reference` as written and as BuildKit names it in errors: Docker Hub's implicit parts spelled out."""
    forms = {reference}
    first, _, rest = reference.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        path = reference if rest else f"library/{reference}"
        forms.add(f"docker.io/{path}")
    return forms


def _registry_failure(error: str, step: str | None) -> Failure | None:
    pushing = _PUSH_ERROR in error
    pulling = not pushing and (
        bool(_PULL_ERROR_RE.search(error)) or (step is not None and step.startswith(_BASE_IMAGE_STEP))
    )
    if not (pushing or pulling):
        return None
    detail = _detail(error)
    doing = "pushing the image" if pushing else "pulling a base image"
    if _REGISTRY_UNAVAILABLE_RE.search(error):
        return Failure(
            Reason.REGISTRY_UNAVAILABLE,
            f"The registry could not be reached or failed while {doing} ({detail}); this is usually"
            " temporary and worth retrying. A host name that never resolves is a typo in the image name.",
        )
    if pulling and _BASE_IMAGE_NOT_FOUND_RE.search(error):
        return Failure(
            Reason.BASE_IMAGE_NOT_FOUND,
            f"A base image in FROM was not found ({detail}): check its name and tag, and that it exists for"
            " every platform built; a private image also needs credentials for its registry in"
            " spec.output.pushSecret.",
        )
    if _REGISTRY_AUTH_RE.search(error):
        return Failure(
            Reason.REGISTRY_AUTH_DENIED,
            f"The registry refused the build's credentials while {doing} ({detail}): check that"
            " spec.output.pushSecret exists, holds credentials for that registry, and that they may"
            + (" push to the repository." if pushing else " pull the image."),
        )
    if pushing:
        return Failure(
            Reason.PUSH_FAILED,
            f"Pushing the image failed ({detail}): check that the registry accepts it (an immutable tag"
            " rejects a second push, some registries limit layer sizes or media types).",
        )
    return None


def _step_failure(error: str, step: str | None) -> Failure:
    detail = _detail(error)
    process = _PROCESS_FAILED_RE.search(error)
    if step is not None and not step.startswith("[internal]"):
        where = f"The Dockerfile step `{step}`"
    elif process is not None:
        where = f"The step running `{process.group(1)}`"
    else:
        return Failure(Reason.BUILD_FAILED, f"BuildKit failed: {detail}.")
    message = f"{where} failed: {detail}. Fix the step or the files it uses; status.logTail shows its output."
    if process is not None and process.group(2) == _KILLED_EXIT_CODE:
        message += (
            " Exit code 137 means the step was killed, usually for using too much memory: raise"
            " spec.resources.limits.memory."
        )
    return Failure(Reason.BUILD_STEP_FAILED, message)
