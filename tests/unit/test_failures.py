"""We test these aspects:

- every reason comes out of the texts and Pod/Job states that really produce it: buildctl's closing
  error for Dockerfile, git, registry and step failures; the Pod's own states for OOM kills,
  evictions, image pulls and scheduling; the Job's deadline;
- each message says what to do and quotes what BuildKit or Kubernetes said; the failing step is named;
- a registry answering plain HTTP is named with its host: a push is told to list it in
  SERVICEBUILD_INSECURE_REGISTRIES, a base image that this setting does not reach FROM; a rootless
  daemon that cannot start names both sysctls that refuse user namespaces;
- only unreachable registries and git servers and evicted Pods are transient;
- errors BuildKit recovered from earlier in the log (a cold cache import) never decide the reason;
- a missing SBOM scanner, in the words of a missing base image, gets its own reason when the Job names
  that scanner (however the setting spells a Docker Hub reference), and only then;
- garbage in any argument gives a BuildFailed answer, never an exception;
- `scrub` replaces secret values and their base64 form, and nothing else.

Where each text comes from (moby/buildkit v0.32 unless said otherwise):
- `error: <err>` is how buildctl prints the error it exits with (`cmd/buildctl/main.go`, `handleErr`),
  and every solve error is wrapped `failed to solve:`; the progress lines `#N …`, `#N ERROR: …` and the
  `------ / > [step]: / ------` block of the failing step are `--progress=plain`
  (`util/progress/progressui`); the `Dockerfile:N` excerpt is `errdefs.Sources` printed by buildctl.
- Dockerfile: `failed to read dockerfile` (`frontend/dockerui/config.go`, `ReadEntrypoint`), `dockerfile
  parse error on line %d: %v` and `unknown instruction: %s` (`frontend/dockerfile/instructions/parse.go`;
  `(did you mean RUN?)` from `util/suggest`), `target stage %q could not be found`
  (`frontend/dockerfile/dockerfile2llb/convert.go`).
- Steps: `process %q did not complete successfully` wrapping `exit code: N`
  (`solver/llbsolver/ops/exec.go`); a COPY of a missing file as seen in a real build (`buildkit.md`).
- git: `failed to fetch remote %s` wrapping `git stderr:\\n<stderr>` + `: exit status 128`
  (`source/git/source.go`, `util/gitutil/git_cli.go`, which sets `GIT_TERMINAL_PROMPT=0`, hence git's
  `terminal prompts disabled`); the `fatal:`/`remote:` lines are git's and GitHub's own.
- Registry: `failed to push %v` (`exporter/containerimage/export.go`), `unexpected status from %s request
  to %s: %s` (containerd `core/remotes/errors/errors.go`), `failed to fetch oauth token` and `server
  message: insufficient_scope: authorization failed` (`util/resolver/authorizer.go`), `failed to resolve
  source metadata for` and `pull access denied, repository does not exist or may require authorization`
  (containerd's resolver); the push and pull lines are copied from public build logs (ghcr.io 403, a
  Harbor 401, an ECR immutable tag 400, Docker Hub over a slow network).
- A registry answering plain HTTP: Go's `http: server gave HTTP response to HTTPS client`
  (`net/http/client.go`) in a `url.Error` (`Head "<url>": …`), wrapped `failed to do request`
  (containerd `core/remotes/docker/resolver.go`); the push, cache and FROM forms as moby/buildkit#2096,
  docker/for-linux#1306 and moby/buildkit#5667 (a rootless Job) show them; the complete logs around
  them are in `buildkit_logs/` (its README says how they were made).
- The daemon that never starts: `examples/buildctl-daemonless/buildctl-daemonless.sh` prints the daemon's
  log; rootlesskit (rootless-containers/rootlesskit v2) ends it with `[rootlesskit:parent] error: %v`
  (`cmd/rootlesskit/main.go`). A refused user namespace shows as `failed to start the child: fork/exec
  /proc/self/exe: …` (`pkg/parent/parent.go`, `Parent`; `operation not permitted` copied from a public
  report), preceded on EACCES, when the AppArmor sysctl is 1, by logrus warnings with a profile hint
  (`pkg/parent/warn.go`, `warnOnChildStartFailure`); or as `failed to setup UID/GID map: newuidmap %s %v
  failed: %s: %w` (`pkg/parent/parent.go`, `setupUIDGIDMap`): newuidmap's own output ends in a newline,
  so `: exit status 1` is a line of its own, as moby/buildkit#3297 shows for the rootless image.
- Kubernetes: Pod and Job states as the API serves them; scheduler, kubelet (eviction, image pull) and
  taint-manager messages copied from real `kubectl describe` output; `Job was active longer than
  specified deadline` is the Job controller's.
"""

import base64
import json
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebuild import failures
from servicebuild.failures import Failure, Reason, classify_run, failed_step, scrub
from servicebuild.jobs import parse_job, parse_pod
from support.pods import unschedulable_pod, waiting_pod


def classify(job: Any, pod: Any, log: str | None) -> Failure:
    """`failures.classify` on a Job and Pod as the API returns them (parsed as the operator parses them)."""
    return failures.classify(parse_job(job), parse_pod(pod), log)


def classify_pending(pod: Any) -> Failure:
    return failures.classify_pending(parse_pod(pod))


IMAGE = "registry.example.com/shop/checkout:1.4.2"
REPO = "https://git.example.com/shop/monorepo.git"
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"

BACKOFF = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
DEADLINE = {
    "type": "Failed",
    "status": "True",
    "reason": "DeadlineExceeded",
    "message": "Job was active longer than specified deadline",
}
FAILED_JOB = {"status": {"failed": 1, "conditions": [BACKOFF]}}

LOAD_DOCKERFILE = """\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 312B done
#1 DONE 0.0s
"""
# A cold build: the registry cache does not exist yet and BuildKit carries on (buildkit.md, seen).
COLD_CACHE = """\
#4 importing cache manifest from registry.example.com/shop/cache
#4 ERROR: failed to configure registry cache importer: registry.example.com/shop/cache: not found
"""


def run_step(command: str, exit_code: int, output: str) -> str:
    return f"""\
{LOAD_DOCKERFILE}{COLD_CACHE}
#9 [build 3/4] RUN {command}
#9 0.431 {output}
#9 ERROR: process "/bin/sh -c {command}" did not complete successfully: exit code: {exit_code}
------
 > [build 3/4] RUN {command}:
0.431 {output}
------
Dockerfile:6
--------------------
   4 |     COPY main.c greet.c Makefile ./
   5 |     ENV CFLAGS=-O2
   6 | >>> RUN {command}
--------------------
error: failed to solve: process "/bin/sh -c {command}" did not complete successfully: exit code: {exit_code}
"""


def failing(vertex: str, error: str) -> str:
    """A build whose vertex `vertex` fails with `error`, as buildctl prints it."""
    first_line = error.splitlines()[0]
    return f"""\
{LOAD_DOCKERFILE}#3 {vertex}
#3 ERROR: {first_line}
------
 > {vertex}:
------
error: failed to solve: {error}
"""


def git_error(stderr: str) -> str:
    return failing(
        f"[internal] load git source {REPO}#{COMMIT}:services/checkout",
        f"failed to read dockerfile: failed to load cache key: failed to fetch remote {REPO}: git stderr:\n"
        f"{stderr}\n: exit status 128",
    )


def push_error(error: str) -> str:
    return failing("exporting to image", f"failed to push {IMAGE}: {error}")


def base_image_error(ref: str, error: str) -> str:
    return failing(
        f"[internal] load metadata for {ref}", f"{ref}: failed to resolve source metadata for {ref}: {error}"
    )


def daemon_log(*lines: str) -> str:
    """buildctl-daemonless.sh giving up on a daemon that never listened: its own lines, then the daemon's
    log, then the busybox `kill` of its exit trap finding the daemon gone."""
    log = "".join(f"{line}\n" for line in lines)
    return (
        "could not connect to unix:///run/user/1000/buildkit/buildkitd.sock after 10 trials\n"
        f"========== log ==========\n{log}sh: can't kill pid 14: No such process\n"
    )


# rootlesskit's hint (`pkg/parent/warn.go`) for /usr/bin/rootlesskit, where the BuildKit image has it.
APPARMOR_HINT = """

########## BEGIN ##########
cat <<EOT | sudo tee "/etc/apparmor.d/usr.bin.rootlesskit"
# ref: https://ubuntu.com/blog/ubuntu-23-10-restricted-unprivileged-user-namespaces
abi <abi/4.0>,
include <tunables/global>

/usr/bin/rootlesskit flags=(unconfined) {
  userns,

  # Site-specific additions and overrides. See local/README for details.
  include if exists <local/usr.bin.rootlesskit>
}
EOT
sudo systemctl restart apparmor.service
########## END ##########

"""
CHILD_REFUSED = "failed to start the child: fork/exec /proc/self/exe: permission denied"
# logrus's text format without a terminal: a message with newlines is quoted (`%q`).
APPARMOR_REFUSED = (
    (
        'time="2026-11-30T05:47:02Z" level=warning msg="[rootlesskit:parent] This error might have happened'
        ' because /proc/sys/kernel/apparmor_restrict_unprivileged_userns is set to 1"'
        ' error="fork/exec /proc/self/exe: permission denied"'
    ),
    'time="2026-11-30T05:47:02Z" level=warning msg='
    + json.dumps("[rootlesskit:parent] Hint: try running the following commands:\n" + APPARMOR_HINT),
    f"[rootlesskit:parent] error: {CHILD_REFUSED}",
)


def termination_tail(log: str) -> str:
    """What `FallbackToLogsOnError` keeps of a log: its last 80 lines, then their last 2048 bytes."""
    tail = "".join(log.splitlines(keepends=True)[-80:]).encode()[-2048:]
    return tail.decode(errors="ignore")


PLAIN_HTTP = "http: server gave HTTP response to HTTPS client"
LOGS = Path(__file__).parent / "buildkit_logs"


def build_pod(*, terminated: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated is not None else {"running": {}}
    return {
        "spec": {
            "initContainers": [{"name": "context", "resources": {"limits": {"memory": "64Mi"}}}],
            "containers": [{"name": "buildkit", "resources": {"limits": {"memory": "4Gi"}}}],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "buildkit", "state": state}],
            **status,
        },
    }


def termination_message(pod: dict[str, Any] | None) -> str | None:
    for status in (pod or {}).get("status", {}).get("containerStatuses", []):
        if status["name"] == "buildkit":
            message: str | None = status["state"].get("terminated", {}).get("message")
            return message
    return None


FROM_LOG: dict[str, tuple[str, Reason, tuple[str, ...]]] = {
    "dockerfile not found": (
        LOAD_DOCKERFILE
        + "error: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory\n",
        Reason.DOCKERFILE_NOT_FOUND,
        ("`Dockerfile`", "spec.dockerfile"),
    ),
    "unknown instruction": (
        LOAD_DOCKERFILE
        + "Dockerfile:3\n--------------------\n   1 |     FROM alpine:3.20\n   2 |     WORKDIR /app\n"
        "   3 | >>> RUNN make\n--------------------\n"
        "error: failed to solve: dockerfile parse error on line 3:"
        " unknown instruction: RUNN (did you mean RUN?)\n",
        Reason.DOCKERFILE_PARSE_ERROR,
        ("line 3: unknown instruction: RUNN", "fix it at that line"),
    ),
    "parse error without a suggestion": (
        LOAD_DOCKERFILE
        + "error: failed to solve: dockerfile parse error on line 52: COPY requires at least two"
        " arguments, but only one was provided. Destination could not be determined\n",
        Reason.DOCKERFILE_PARSE_ERROR,
        ("line 52: COPY requires at least two arguments",),
    ),
    "target stage missing": (
        LOAD_DOCKERFILE + 'error: failed to solve: target stage "runtime" could not be found\n',
        Reason.TARGET_STAGE_NOT_FOUND,
        ('target stage "runtime" could not be found', "spec.target"),
    ),
    "RUN step exits non-zero": (
        run_step("make greet", 2, "main.c:3:10: fatal error: greet.h: No such file or directory"),
        Reason.BUILD_STEP_FAILED,
        ("`[build 3/4] RUN make greet`", "exit code: 2", "status.logTail"),
    ),
    "RUN step killed": (
        run_step("npm run build", 137, "Killed"),
        Reason.BUILD_STEP_FAILED,
        ("`[build 3/4] RUN npm run build`", "exit code: 137", "spec.resources.limits.memory"),
    ),
    "COPY of a file not in the context": (
        failing(
            "[build 2/4] COPY main.c ./",
            "failed to compute cache key: failed to calculate checksum of ref 1f3a::q7x:"
            ' "/main.c": not found',
        ),
        Reason.BUILD_STEP_FAILED,
        ("`[build 2/4] COPY main.c ./`", '"/main.c": not found'),
    ),
    "git repository not found": (
        git_error(
            "remote: Repository not found.\n"
            "fatal: repository 'https://git.example.com/shop/monorepo.git/' not found"
        ),
        Reason.SOURCE_NOT_FOUND,
        ("repository 'https://git.example.com/shop/monorepo.git/' not found", "spec.source.git.url"),
    ),
    "git ref not found": (
        git_error("fatal: couldn't find remote ref release-9"),
        Reason.SOURCE_NOT_FOUND,
        ("couldn't find remote ref release-9", "revision"),
    ),
    "git wants credentials": (
        git_error("fatal: could not read Username for 'https://git.example.com': terminal prompts disabled"),
        Reason.GIT_AUTH_FAILED,
        ("could not read Username", "spec.source.git.authSecret"),
    ),
    "git refuses the token": (
        git_error(
            "remote: Invalid username or password.\n"
            "fatal: Authentication failed for 'https://git.example.com/shop/monorepo.git/'"
        ),
        Reason.GIT_AUTH_FAILED,
        ("Authentication failed", "spec.source.git.authSecret"),
    ),
    "git server unreachable": (
        git_error(
            "fatal: unable to access 'https://git.example.com/shop/monorepo.git/': Could not resolve host:"
            " git.example.com"
        ),
        Reason.SOURCE_UNAVAILABLE,
        ("Could not resolve host: git.example.com", "worth retrying"),
    ),
    "base image tag missing": (
        base_image_error(
            "docker.io/library/golang:1.99-alpine", "docker.io/library/golang:1.99-alpine: not found"
        ),
        Reason.BASE_IMAGE_NOT_FOUND,
        ("docker.io/library/golang:1.99-alpine: not found", "check its name and tag"),
    ),
    "base image repository missing on Docker Hub": (
        base_image_error(
            "docker.io/library/golan:1.23",
            "pull access denied, repository does not exist or may require authorization: server message:"
            " insufficient_scope: authorization failed",
        ),
        Reason.BASE_IMAGE_NOT_FOUND,
        ("pull access denied", "spec.output.pushSecret"),
    ),
    "base image without the platform": (
        base_image_error(
            "docker.io/library/maven:3.9-eclipse-temurin-17-alpine",
            "no match for platform in manifest: not found",
        ),
        Reason.BASE_IMAGE_NOT_FOUND,
        ("no match for platform in manifest", "every platform built"),
    ),
    "private base image without credentials": (
        base_image_error(
            "registry.example.com/base/go:1.23",
            "failed to authorize: failed to fetch oauth token: unexpected status from GET request to"
            " https://registry.example.com/service/token?scope=repository%3Abase%2Fgo%3Apull:"
            " 401 Unauthorized",
        ),
        Reason.REGISTRY_AUTH_DENIED,
        ("401 Unauthorized", "pulling a base image", "pull the image"),
    ),
    "base image registry slow": (
        base_image_error(
            "docker.io/library/node:24-alpine",
            'failed to do request: Head "https://registry-1.docker.io/v2/library/node/manifests/24-alpine":'
            " net/http: TLS handshake timeout",
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("TLS handshake timeout", "pulling a base image"),
    ),
    "push without credentials": (
        push_error(
            "unexpected status from POST request to https://registry.example.com/v2/shop/checkout/blobs/uploads/:"
            " 401 Unauthorized"
        ),
        Reason.REGISTRY_AUTH_DENIED,
        ("401 Unauthorized", "pushing the image", "spec.output.pushSecret", "push to the repository"),
    ),
    "push forbidden": (
        push_error(
            "unexpected status from HEAD request to https://ghcr.io/v2/shop/checkout/blobs/sha256:4f4fb700ef54:"
            " 403 Forbidden"
        ),
        Reason.REGISTRY_AUTH_DENIED,
        ("403 Forbidden",),
    ),
    "push scope refused": (
        push_error("server message: insufficient_scope: authorization failed"),
        Reason.REGISTRY_AUTH_DENIED,
        ("insufficient_scope",),
    ),
    "push denied by the registry": (
        push_error("denied: permission_denied: write_package"),
        Reason.REGISTRY_AUTH_DENIED,
        ("permission_denied: write_package",),
    ),
    "push of an immutable tag": (
        push_error(
            'failed commit on ref "manifest-sha256:1eb80dd4": unexpected status from PUT request to'
            " https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/shop/checkout/manifests/1.4.2:"
            " 400 Bad Request"
        ),
        Reason.PUSH_FAILED,
        ("400 Bad Request", "immutable tag"),
    ),
    "push registry down": (
        push_error(
            'failed to do request: Head "https://registry.example.com/v2/shop/checkout/blobs/sha256:4f4fb700ef54":'
            " dial tcp 10.96.0.12:443: connect: connection refused"
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("connection refused", "pushing the image", "worth retrying"),
    ),
    "push registry failing": (
        push_error(
            "unexpected status from PUT request to https://registry.example.com/v2/shop/checkout/manifests/1.4.2:"
            " 503 Service Unavailable"
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("503 Service Unavailable",),
    ),
    "push token service failing": (
        push_error(
            "failed to authorize: failed to fetch oauth token: unexpected status from POST request to"
            " https://auth.example.com/token: 500 Internal Server Error"
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("500 Internal Server Error",),
    ),
    "push timing out": (
        push_error(
            'failed to do request: Put "https://registry.example.com/v2/shop/checkout/blobs/uploads/1f3a":'
            " dial tcp 10.96.0.12:443: i/o timeout"
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("i/o timeout",),
    ),
    "push to a plain-HTTP registry not listed as insecure": (
        termination_tail((LOGS / "push-to-plain-http-registry.log").read_text()),
        Reason.PUSH_FAILED,
        (
            "The registry registry.test:5000 answers in plain HTTP, but BuildKit pushed over HTTPS",
            PLAIN_HTTP,
            "add registry.test:5000 to the operator's SERVICEBUILD_INSECURE_REGISTRIES",
            "registry cache",
        ),
    ),
    "base image from a plain-HTTP registry": (
        termination_tail((LOGS / "base-image-from-plain-http-registry.log").read_text()),
        Reason.BUILD_FAILED,
        (
            "The registry registry.test:5000 answers in plain HTTP, but BuildKit pulled a base image",
            PLAIN_HTTP,
            "SERVICEBUILD_INSECURE_REGISTRIES makes pushes and the registry cache use plain HTTP, not FROM",
        ),
    ),
    "rootless daemon cannot start": (
        daemon_log(
            "[rootlesskit:parent] error: failed to start the child: fork/exec /proc/self/exe:"
            " operation not permitted"
        ),
        Reason.BUILDER_START_FAILED,
        ("fork/exec /proc/self/exe: operation not permitted", "user namespaces", "Unconfined"),
    ),
    "the node refuses the UID map (Ubuntu 24.04 host)": (
        daemon_log(
            "[rootlesskit:parent] error: failed to setup UID/GID map: newuidmap 15 [0 1000 1 1 100000 65536]"
            " failed: newuidmap: write to uid_map failed: Operation not permitted",
            ": exit status 1",
        ),
        Reason.BUILDER_START_FAILED,
        (
            "newuidmap: write to uid_map failed: Operation not permitted",
            "user.max_user_namespaces",
            "kernel.apparmor_restrict_unprivileged_userns=1",
            "Unconfined",
        ),
    ),
    "AppArmor refuses the user namespace, rootlesskit hints why": (
        daemon_log(*APPARMOR_REFUSED),
        Reason.BUILDER_START_FAILED,
        (
            f"([rootlesskit:parent] error: {CHILD_REFUSED})",
            "kernel.apparmor_restrict_unprivileged_userns=1",
            "allow `userns` to rootlesskit",
        ),
    ),
    "an error nobody classified": (
        LOAD_DOCKERFILE + "error: failed to solve: failed to compute cache key: mount callback failed\n",
        Reason.BUILD_FAILED,
        ("mount callback failed",),
    ),
    "buildx writes ERROR in capitals": (
        run_step("make greet", 2, "make: *** [Makefile:3: greet] Error 1").replace(
            "error: failed", "ERROR: failed"
        ),
        Reason.BUILD_STEP_FAILED,
        ("`[build 3/4] RUN make greet`",),
    ),
}


@pytest.mark.parametrize(("log", "reason", "quoted"), FROM_LOG.values(), ids=FROM_LOG.keys())
def test_the_log_decides_the_reason(log: str, reason: Reason, quoted: tuple[str, ...]) -> None:
    pod = build_pod(terminated={"exitCode": 1, "reason": "Error", "message": log})
    failure = classify(FAILED_JOB, pod, termination_message(pod))
    assert failure.reason == reason
    for text in quoted:
        assert text in failure.message


TRANSIENT = {Reason.REGISTRY_UNAVAILABLE, Reason.SOURCE_UNAVAILABLE, Reason.EVICTED}


@pytest.mark.parametrize(
    ("log", "reason"), [(log, reason) for log, reason, _ in FROM_LOG.values()], ids=FROM_LOG.keys()
)
def test_only_outages_are_transient(log: str, reason: Reason) -> None:
    assert classify(FAILED_JOB, build_pod(terminated={"exitCode": 1, "message": log}), log).transient is (
        reason in TRANSIENT
    )


def test_a_failed_step_is_named() -> None:
    log = run_step("make greet", 2, "main.c:3:10: fatal error: greet.h: No such file or directory")
    failure = classify(FAILED_JOB, build_pod(terminated={"exitCode": 1, "message": log}), log)
    assert failure.failed_step == "[build 3/4] RUN make greet"


def test_a_step_is_named_by_its_command_when_the_log_lost_its_name() -> None:
    log = (
        'error: failed to solve: process "/bin/sh -c go build ./..." did not complete successfully:'
        " exit code: 1\n"
    )
    failure = classify(FAILED_JOB, None, log)
    assert failure.reason == Reason.BUILD_STEP_FAILED
    assert "`/bin/sh -c go build ./...`" in failure.message
    assert failure.failed_step is None


def test_git_stderr_lines_starting_with_error_do_not_hide_the_git_context() -> None:
    log = git_error("error: Server does not allow request for unadvertised object " + COMMIT)
    assert classify(FAILED_JOB, None, log).reason == Reason.SOURCE_NOT_FOUND


def test_a_recovered_cache_import_error_alone_is_not_the_reason() -> None:
    # The build container died before buildctl printed its error: only the cold cache line is there.
    log = LOAD_DOCKERFILE + COLD_CACHE + "#5 [build 1/4] FROM docker.io/library/alpine:3.20\n"
    failure = classify(FAILED_JOB, build_pod(terminated={"exitCode": 137, "message": log}), log)
    assert failure.reason == Reason.BUILD_FAILED
    assert "cache importer" not in failure.message


OOM_KILLED = {"exitCode": 137, "reason": "OOMKilled", "message": run_step("make", 2, "cc1: out of memory")}
EVICTED_STATUS = {
    "reason": "Evicted",
    "message": "The node was low on resource: ephemeral-storage. Threshold quantity: 9463104068, available:"
    " 9233784Ki. Container buildkit was using 1016Ki, request is 0, has larger consumption of"
    " ephemeral-storage.",
}
TAINT = {
    "type": "DisruptionTarget",
    "status": "True",
    "reason": "DeletionByTaintManager",
    "message": "Taint manager: deleting due to NoExecute taint",
}
PULL_BACKOFF = waiting_pod(
    "buildkit", "ImagePullBackOff", 'Back-off pulling image "moby/buildkit:v0.32.2-rootles"'
)

FROM_STATES: dict[str, tuple[dict[str, Any], dict[str, Any] | None, Reason, tuple[str, ...]]] = {
    "build container OOM killed": (
        FAILED_JOB,
        build_pod(terminated=OOM_KILLED),
        Reason.OOM_KILLED,
        ("buildkit", "(limit 4Gi)", "spec.resources.limits.memory"),
    ),
    "context container OOM killed": (
        FAILED_JOB,
        {
            **build_pod(),
            "status": {
                "phase": "Failed",
                "initContainerStatuses": [
                    {"name": "context", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
                ],
            },
        },
        Reason.OOM_KILLED,
        ("context", "(limit 64Mi)"),
    ),
    "evicted by the kubelet": (
        FAILED_JOB,
        build_pod(terminated={"exitCode": 137, "reason": "ContainerStatusUnknown"}, **EVICTED_STATUS),
        Reason.EVICTED,
        ("The node was low on resource: ephemeral-storage", "worth retrying"),
    ),
    "deleted by the taint manager": (
        FAILED_JOB,
        build_pod(terminated={"exitCode": 143, "reason": "Error"}, conditions=[TAINT]),
        Reason.EVICTED,
        ("DeletionByTaintManager: Taint manager: deleting due to NoExecute taint",),
    ),
    "deadline while building": (
        {"status": {"conditions": [DEADLINE]}},
        build_pod(terminated={"exitCode": 137, "reason": "Error"}),
        Reason.DEADLINE_EXCEEDED,
        ("spec.timeout", "raise spec.timeout"),
    ),
    "deadline while the Pod waits for its image": (
        {"status": {"conditions": [DEADLINE]}},
        PULL_BACKOFF,
        Reason.DEADLINE_EXCEEDED,
        ("spec.timeout ran out before the build Pod started", "ImagePullBackOff", "spec.builderImage"),
    ),
    "ConfigMap context cannot be unpacked": (
        FAILED_JOB,
        {
            "status": {
                "phase": "Failed",
                "initContainerStatuses": [
                    {"name": "context", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
                ],
                "containerStatuses": [
                    {"name": "buildkit", "state": {"waiting": {"reason": "PodInitializing"}}}
                ],
            }
        },
        Reason.BUILD_FAILED,
        ("container context, exit code 1", "spec.source.configMap.archive"),
    ),
    "Pod gone": (FAILED_JOB, None, Reason.BUILD_FAILED, ("Pod is gone",)),
}


@pytest.mark.parametrize(("job", "pod", "reason", "quoted"), FROM_STATES.values(), ids=FROM_STATES.keys())
def test_pod_and_job_states_decide_the_reason(
    job: dict[str, Any], pod: dict[str, Any] | None, reason: Reason, quoted: tuple[str, ...]
) -> None:
    failure = classify(job, pod, termination_message(pod))
    assert failure.reason == reason
    assert failure.transient is (reason in TRANSIENT)
    for text in quoted:
        assert text in failure.message


def test_an_oom_kill_wins_over_the_step_error_it_caused() -> None:
    failure = classify(FAILED_JOB, build_pod(terminated=OOM_KILLED), OOM_KILLED["message"])
    assert failure.reason == Reason.OOM_KILLED
    assert failure.failed_step == "[build 3/4] RUN make"


UNSCHEDULABLE = unschedulable_pod("0/3 nodes are available: 3 Insufficient memory.")

PENDING: dict[str, tuple[dict[str, Any] | None, Reason, tuple[str, ...]]] = {
    "unschedulable": (
        UNSCHEDULABLE,
        Reason.UNSCHEDULABLE,
        ("Unschedulable: 0/3 nodes are available: 3 Insufficient memory.", "spec.resources.requests"),
    ),
    "image pull back-off": (
        PULL_BACKOFF,
        Reason.BUILDER_IMAGE_PULL_FAILED,
        (
            'buildkit: ImagePullBackOff: Back-off pulling image "moby/buildkit:v0.32.2-rootles"',
            "spec.builderImage",
        ),
    ),
    "image pull refused": (
        waiting_pod(
            "buildkit",
            "ErrImagePull",
            'failed to pull and unpack image "docker.io/moby/buildkit:v0.32.2-rootless": failed to resolve'
            ' reference "docker.io/moby/buildkit:v0.32.2-rootless": pull access denied, repository does'
            " not exist or may require authorization: server message: insufficient_scope: authorization"
            " failed",
        ),
        Reason.BUILDER_IMAGE_PULL_FAILED,
        ("ErrImagePull", "pull access denied"),
    ),
    "invalid image name on the init container": (
        waiting_pod(
            "context",
            "InvalidImageName",
            'Failed to apply default image tag "moby/buildkit:v0.32.2 rootless": couldn\'t parse image'
            ' reference "moby/buildkit:v0.32.2 rootless": invalid reference format',
            init=True,
        ),
        Reason.BUILDER_IMAGE_PULL_FAILED,
        ("context: InvalidImageName", "invalid reference format"),
    ),
    "a missing Secret": (
        waiting_pod("buildkit", "CreateContainerConfigError", 'secret "registry-push" not found'),
        Reason.PENDING_TIMEOUT,
        ('buildkit: CreateContainerConfigError: secret "registry-push" not found',),
    ),
    "still initialising": (
        waiting_pod("buildkit", "PodInitializing", ""),
        Reason.PENDING_TIMEOUT,
        ("the Pod has not started",),
    ),
    "no Pod": (None, Reason.PENDING_TIMEOUT, ("no Pod started",)),
}


@pytest.mark.parametrize(("pod", "reason", "quoted"), PENDING.values(), ids=PENDING.keys())
def test_a_pod_that_does_not_start_says_why(
    pod: dict[str, Any] | None, reason: Reason, quoted: tuple[str, ...]
) -> None:
    failure = classify_pending(pod)
    assert failure.reason == reason
    assert not failure.transient
    for text in quoted:
        assert text in failure.message


SCANNER = "docker.io/docker/buildkit-syft-scanner:stable-1"


def sbom_job(scanner: str | None) -> dict[str, Any]:
    """A failed build Job that made an SBOM with `scanner` (as its annotation records), or none."""
    annotations = {"servicebuild.dev/sbom-scanner": scanner} if scanner else {}
    return {"metadata": {"annotations": annotations}, **FAILED_JOB}


def scanner_error(ref: str, error: str) -> str:
    """BuildKit failing to pull `ref` (seen on a real cluster for a missing scanner, buildkit.md)."""
    return failing(
        f"[internal] load metadata for {ref}", f"failed to resolve source metadata for {ref}: {error}"
    )


WITH_SCANNER: dict[str, tuple[str | None, str, Reason, tuple[str, ...]]] = {
    "scanner missing": (
        SCANNER,
        scanner_error(SCANNER, f"{SCANNER}: not found"),
        Reason.SBOM_SCANNER_NOT_FOUND,
        (SCANNER, "SERVICEBUILD_SBOM_SCANNER_IMAGE", "spec.attestations.sbom"),
    ),
    "scanner set without Docker Hub's implicit parts": (
        "docker/buildkit-syft-scanner:stable-1",
        scanner_error(SCANNER, f"{SCANNER}: not found"),
        Reason.SBOM_SCANNER_NOT_FOUND,
        ("SERVICEBUILD_SBOM_SCANNER_IMAGE",),
    ),
    "scanner of a private mirror, pinned by digest, missing": (
        f"mirror.example.com:5000/scanners/syft@sha256:{'5' * 64}",
        scanner_error(
            f"mirror.example.com:5000/scanners/syft@sha256:{'5' * 64}",
            f"mirror.example.com:5000/scanners/syft@sha256:{'5' * 64}: not found",
        ),
        Reason.SBOM_SCANNER_NOT_FOUND,
        ("mirror.example.com:5000/scanners/syft@sha256:",),
    ),
    "base image missing in a build with a scanner": (
        SCANNER,
        base_image_error(
            "docker.io/library/golang:1.99-alpine", "docker.io/library/golang:1.99-alpine: not found"
        ),
        Reason.BASE_IMAGE_NOT_FOUND,
        ("golang:1.99-alpine",),
    ),
    "scanner missing in a Job that names no scanner": (
        None,
        scanner_error(SCANNER, f"{SCANNER}: not found"),
        Reason.BASE_IMAGE_NOT_FOUND,
        (SCANNER,),
    ),
    "scanner registry unreachable": (
        SCANNER,
        scanner_error(
            SCANNER,
            'failed to do request: Head "https://registry-1.docker.io/v2/docker/buildkit-syft-scanner/manifests/'
            'stable-1": dial tcp: lookup registry-1.docker.io: i/o timeout',
        ),
        Reason.REGISTRY_UNAVAILABLE,
        ("worth retrying",),
    ),
}


@pytest.mark.parametrize(
    ("scanner", "log", "reason", "quoted"), WITH_SCANNER.values(), ids=WITH_SCANNER.keys()
)
def test_a_missing_sbom_scanner_is_named_when_the_job_names_it(
    scanner: str | None, log: str, reason: Reason, quoted: tuple[str, ...]
) -> None:
    pod = build_pod(terminated={"exitCode": 1, "reason": "Error", "message": log})
    failure = classify(sbom_job(scanner), pod, termination_message(pod))
    assert failure.reason == reason
    for text in quoted:
        assert text in failure.message


# buildctl run by the operator against a pool's daemon (`--addr tcp://…`): gRPC's Unavailable when it cannot
# dial, or loses the daemon mid-build, as moby/buildkit#1222 and #1702 show them; the rest as in a Job.
FROM_RUN = {
    "daemon refuses the connection": (
        (
            "error: failed to get status: rpc error: code = Unavailable desc = connection error: desc ="
            ' "transport: Error while dialing: dial tcp 10.96.12.7:1234: connect: connection refused"\n'
        ),
        Reason.BUILDER_UNAVAILABLE,
        ("could not be reached", "connection refused", "retried"),
    ),
    "daemon gone mid-build": (
        (
            "#9 [build 3/4] RUN make greet\n#9 0.412 cc -O2 -o greet main.c greet.c\n"
            "error: failed to receive status: rpc error: code = Unavailable desc = transport is closing\n"
        ),
        Reason.BUILDER_UNAVAILABLE,
        ("transport is closing",),
    ),
    "a build step fails": (
        (
            '#9 ERROR: process "/bin/sh -c make greet" did not complete successfully: exit code: 2\n'
            "------\n > [build 3/4] RUN make greet:\n"
            "0.431 main.c:3:10: fatal error: greet.h: No such file\n------\n"
            'ERROR: failed to solve: process "/bin/sh -c make greet" did not complete successfully:'
            " exit code: 2\n"
        ),
        Reason.BUILD_STEP_FAILED,
        ("make greet", "exit code: 2"),
    ),
    "buildctl refuses its arguments": (
        "error: open secrets/npmrc: no such file or directory\n",
        Reason.BUILD_FAILED,
        ("open secrets/npmrc: no such file or directory",),
    ),
}


@pytest.mark.parametrize(("log", "reason", "quoted"), FROM_RUN.values(), ids=FROM_RUN.keys())
def test_a_pool_build_failure_is_read_from_buildctls_output(
    log: str, reason: Reason, quoted: tuple[str, ...]
) -> None:
    failure = classify_run(log, sbom_scanner=None)
    assert failure.reason == reason
    assert failure.transient == (reason == Reason.BUILDER_UNAVAILABLE)
    for text in quoted:
        assert text in failure.message


def test_every_reason_but_the_operators_own_is_reachable() -> None:
    reached = {reason for _, reason, _ in FROM_LOG.values()}
    reached |= {reason for _, reason, _ in FROM_RUN.values()}
    reached |= {reason for _, _, reason, _ in WITH_SCANNER.values()}
    reached |= {reason for _, _, reason, _ in FROM_STATES.values()}
    reached |= {reason for _, reason, _ in PENDING.values()}
    operators_own = {
        Reason.INVALID_SPEC,
        Reason.REPORT_MISSING,
        Reason.REGISTRY_NOT_ALLOWED,
        Reason.SECRET_NOT_FOUND,
        Reason.INVALID_PUSH_SECRET,
        Reason.JOB_REJECTED,
        Reason.DOCKERFILE_CHECK_FAILED,
        Reason.SIZE_BUDGET_EXCEEDED,
    }
    assert set(Reason) - reached == operators_own


def test_long_errors_are_cut_for_the_condition() -> None:
    log = f"error: failed to solve: {'x' * 5000}\n"
    failure = classify(FAILED_JOB, None, log)
    assert len(failure.message) < 600
    assert failure.message.count("x") < 500


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=25,
)
KEYS = st.sampled_from(
    [
        "status",
        "spec",
        "conditions",
        "containerStatuses",
        "initContainerStatuses",
        "state",
        "terminated",
        "waiting",
        "reason",
        "message",
        "type",
        "name",
        "phase",
        "containers",
        "resources",
        "limits",
        "memory",
    ]
)
API_SHAPED = st.recursive(
    st.none()
    | st.text(max_size=20)
    | st.sampled_from(["True", "Failed", "OOMKilled", "Evicted", "buildkit"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)


@given(job=JSON | API_SHAPED, pod=JSON | API_SHAPED, log=JSON | st.text())
def test_garbage_never_raises(job: object, pod: object, log: object) -> None:
    failure = classify(cast("Any", job), cast("Any", pod), cast("Any", log))
    assert isinstance(failure, Failure)
    assert failure.message
    assert isinstance(classify_pending(cast("Any", pod)), Failure)


WRONG_TYPES = {
    "status a list": {"status": []},
    "conditions a string": {"status": {"conditions": "PodScheduled"}},
    "a condition a string": {"status": {"conditions": ["DisruptionTarget"]}},
    "waiting reason a list": {
        "status": {
            "containerStatuses": [{"name": "buildkit", "state": {"waiting": {"reason": ["ErrImagePull"]}}}]
        }
    },
    "terminated a string": {
        "status": {"initContainerStatuses": [{"name": "context", "state": {"terminated": "x"}}]}
    },
    "OOM killed, limits a list": {
        "spec": {"containers": [{"name": "buildkit", "resources": {"limits": ["4Gi"]}}]},
        "status": {
            "containerStatuses": [{"name": "buildkit", "state": {"terminated": {"reason": "OOMKilled"}}}]
        },
    },
    "evicted, message a dict": {"status": {"reason": "Evicted", "message": {"node": "pressure"}}},
}


@pytest.mark.parametrize("pod", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrongly_typed_api_fields_are_ignored(pod: dict[str, Any]) -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": ["DeadlineExceeded"]}]}}
    assert isinstance(classify(job, pod, None), Failure)
    assert isinstance(classify({"status": {"conditions": [DEADLINE]}}, pod, None), Failure)
    assert isinstance(classify_pending(pod), Failure)


def test_failed_step_absent_when_the_log_names_none() -> None:
    assert failed_step("error: something else entirely") is None


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


SCRUB = {
    "plain value": ("token ghp_s3cr3tT0ken in a URL", ["ghp_s3cr3tT0ken"], "token *** in a URL"),
    "base64 form": (
        f"Authorization: Basic {b64('x-access-token:ghp_s3cr3tT0ken')}",
        ["x-access-token:ghp_s3cr3tT0ken"],
        "Authorization: Basic ***",
    ),
    "base64 without padding": (f"auth={b64('pw12').rstrip('=')}", ["pw12"], "auth=***"),
    "a file's trailing newline": ("using hunter22 now", ["hunter22\n"], "using *** now"),
    "the longer of two overlapping secrets first": ("key abcdef", ["abc", "abcdef"], "key ***"),
    "every occurrence": ("pw pw pw", ["pw"], "*** *** ***"),
    "empty values ignored": ("nothing to hide", ["", "  "], "nothing to hide"),
    "regex characters are literal": ("a.b a+b", ["a+b"], "a.b ***"),
    "no secrets": ("plain", [], "plain"),
}


@pytest.mark.parametrize(("text", "secrets", "scrubbed"), SCRUB.values(), ids=SCRUB.keys())
def test_scrub(text: str, secrets: list[str], scrubbed: str) -> None:
    assert scrub(text, secrets) == scrubbed
