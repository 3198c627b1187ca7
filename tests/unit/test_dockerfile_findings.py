"""We test these aspects:

- realistic Go, Node, Python, Java and C services (`tests/unit/dockerfiles/`, described in its README)
  give exactly the expected findings, as (rule, stage, line), and every rule has positive and
  negative cases among them;
- the shared BuildKit samples: `calc-Dockerfile` with target `runtime` skips its `test` stage
  (TestStageNotBuilt, fixed by copying `--from=test`), and with the sample log's build argument its
  base is `busybox:latest`; `checks-Dockerfile` runs as root on `latest`;
- messages state what is wrong and the fix in at most two sentences, naming the instruction, files and
  lines: SecretInImage names `.dockerignore` and `RUN --mount=type=secret`, CopyAllBeforeDependencies
  the manifests to copy first, TestStageNotBuilt how the target comes to depend on the tests;
- each rule's edges in small inline Dockerfiles: `.dockerignore` and `COPY --exclude`, secret look-alikes
  that are not secrets, wildcard and directory sources, `--from=<index>`, installs in heredocs and
  after `cd`, the stages a target does not build, users and bases inherited through `FROM <stage>`,
  digests, toolchain and runtime images;
- without a context the context rules stay silent; findings are sorted (errors first, then by line)
  and at most 50; what BuildKit refuses raises DockerfileError.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servicebuild.dockerfile import (
    MAX_FINDINGS,
    BuildContext,
    DockerfileError,
    Finding,
    Rule,
    Severity,
    analyze,
)

CASES_DIR = Path(__file__).parent / "dockerfiles"

COPY_ALL = Rule.COPY_ALL_BEFORE_DEPENDENCIES
SECRET = Rule.SECRET_IN_IMAGE
BUILD_TREE = Rule.FINAL_STAGE_COPIES_BUILD_TREE
BUILD_IMAGE = Rule.FINAL_STAGE_ON_BUILD_IMAGE
TEST_STAGE = Rule.TEST_STAGE_NOT_BUILT
ROOT = Rule.RUNS_AS_ROOT
UNPINNED = Rule.UNPINNED_BASE_IMAGE


@dataclass(frozen=True)
class Case:
    directory: str
    expected: set[tuple[Rule, str, int]]
    language: str
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    unread: tuple[str, ...] = ()
    """Context files whose text the analysis is not given (it knows only their names)."""

    @property
    def id(self) -> str:
        return f"{self.directory}-{self.target or 'last'}{'-args' if self.build_args else ''}"


CASES = [
    Case("go-distroless", set(), "Go"),
    Case(
        "go-single-stage",
        {(SECRET, "stage-0", 3), (BUILD_IMAGE, "stage-0", 1), (COPY_ALL, "stage-0", 3), (ROOT, "stage-0", 1)},
        "Go",
    ),
    Case("node-build-tree", {(BUILD_TREE, "stage-1", 11)}, "Node"),
    Case("node-npmrc-token", {(SECRET, "deps", 3), (COPY_ALL, "deps", 3)}, "Node"),
    Case("node-slim", set(), "Node"),
    Case("python-slim-venv", set(), "Python"),
    Case(
        "python-full-image",
        {(BUILD_IMAGE, "stage-0", 1), (COPY_ALL, "stage-0", 3), (SECRET, "stage-0", 3), (ROOT, "stage-0", 1)},
        "Python",
        unread=(".pypirc",),
    ),
    Case("python-test-stage", {(TEST_STAGE, "test", 7)}, "Python"),
    Case("java-maven", set(), "Java"),
    Case(
        "java-jdk-runtime",
        {(COPY_ALL, "build", 3), (BUILD_IMAGE, "stage-1", 7), (UNPINNED, "build", 1), (ROOT, "stage-1", 9)},
        "Java",
    ),
    Case("c-static", set(), "C"),
    Case("c-toolchain-base", {(SECRET, "build", 4), (BUILD_IMAGE, "stage-1", 7)}, "C"),
    Case("calc", {(TEST_STAGE, "test", 7)}, "C", target="runtime"),
    Case(
        "calc",
        {(TEST_STAGE, "test", 7), (UNPINNED, "runtime", 10)},
        "C",
        target="runtime",
        build_args={"BASE_IMAGE": "registry.test:5000/library/busybox:latest"},
    ),
    Case("calc", {(BUILD_IMAGE, "test", 7), (ROOT, "test", 7)}, "C", target="test"),
    Case("checks", {(ROOT, "base", 1), (UNPINNED, "base", 1)}, "shell"),
]


def case_of(directory: str) -> Case:
    """The first case of that directory in CASES."""
    return next(candidate for candidate in CASES if candidate.directory == directory)


def load(directory: str, unread: tuple[str, ...] = ()) -> tuple[str, BuildContext]:
    case = CASES_DIR / directory
    root = case / "context"
    files = (
        [path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()]
        if root.is_dir()
        else []
    )
    contents = {name: (root / name).read_text() for name in files if name not in unread}
    return (case / "Dockerfile").read_text(), BuildContext.of(files, contents)


def findings_for(case: Case) -> list[Finding]:
    dockerfile, context = load(case.directory, case.unread)
    return analyze(dockerfile, target=case.target, build_args=case.build_args, context=context)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_realistic_services_give_exactly_the_expected_findings(case: Case) -> None:
    assert {(finding.rule, finding.stage, finding.line) for finding in findings_for(case)} == case.expected


def test_every_rule_has_positive_and_negative_cases() -> None:
    for rule in Rule:
        positive = {case.language for case in CASES if any(expected[0] is rule for expected in case.expected)}
        negative = {
            case.language for case in CASES if all(expected[0] is not rule for expected in case.expected)
        }
        assert positive, rule
        assert {"Go", "Node", "Python", "Java", "C"} <= negative, rule
    assert {"Go", "Node", "Python", "Java", "C"} <= {case.language for case in CASES if case.expected}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_messages_are_one_or_two_sentences_naming_the_instruction(case: Case) -> None:
    for finding in findings_for(case):
        sentences = re.split(r"(?<=\.)\s+(?=[A-Z])", finding.message)
        assert 1 <= len(sentences) <= 2, finding.message
        assert "`" in finding.message
        expected = {
            ROOT: {Severity.INFO},
            UNPINNED: {Severity.INFO},
            SECRET: {Severity.ERROR, Severity.WARNING},
        }
        assert finding.severity in expected.get(finding.rule, {Severity.WARNING})


def message(case: Case, rule: Rule) -> str:
    return next(finding.message for finding in findings_for(case) if finding.rule is rule)


def test_calc_shows_how_runtime_comes_to_depend_on_the_test_stage() -> None:
    text = message(Case("calc", set(), "C", target="runtime"), TEST_STAGE)
    assert text.startswith("Stage `test` runs tests, but the target `runtime` does not depend on it")
    assert "BuildKit skips it" in text
    assert "`COPY --from=test /calc /usr/local/bin/calc` (line 11)" in text


def test_a_test_stage_that_no_copy_leads_to_gets_the_marker_file_idiom() -> None:
    text = message(case_of("python-test-stage"), TEST_STAGE)
    assert "`&& touch /tests-passed`" in text
    assert "`COPY --from=test /tests-passed /tests-passed` to `runtime`" in text


def test_secret_messages_name_the_files_dockerignore_and_secret_mounts() -> None:
    text = message(case_of("go-single-stage"), SECRET)
    assert text.startswith("`COPY . .` copies `.env` into stage `stage-0`")
    assert "`.dockerignore`" in text
    assert "`RUN --mount=type=secret," in text
    build_stage = message(case_of("node-npmrc-token"), SECRET)
    assert "`.npmrc` into stage `deps`" in build_stage
    assert "registry cache" in build_stage


def test_a_pypirc_is_a_warning_by_name_and_an_error_once_its_password_is_seen() -> None:
    by_name = [f for f in findings_for(case_of("python-full-image")) if f.rule is SECRET]
    read = [f for f in findings_for(Case("python-full-image", set(), "Python")) if f.rule is SECRET]
    assert [(f.severity, "if it holds a registry token" in f.message) for f in by_name] == [
        (Severity.WARNING, True)
    ]
    assert [f.severity for f in read] == [Severity.ERROR]


def test_copy_all_messages_name_the_manifests_to_copy_first() -> None:
    assert message(case_of("node-npmrc-token"), COPY_ALL) == (
        "`COPY . .` comes before `npm ci` (line 4), so a change to any file re-runs the install. "
        "Copy `package.json`, `package-lock.json` first (`COPY package.json package-lock.json ./`), "
        "install, then copy the rest."
    )
    assert "(`COPY requirements.txt /app/`)" in message(case_of("python-full-image"), COPY_ALL)
    assert "Copy `go.mod`, `go.sum` first" in message(case_of("go-single-stage"), COPY_ALL)


def test_build_image_messages_suggest_a_runtime_image() -> None:
    assert "eclipse-temurin:<version>-jre" in message(case_of("java-jdk-runtime"), BUILD_IMAGE)
    assert "distroless" in message(case_of("go-single-stage"), BUILD_IMAGE)
    assert "compiles in without installing a toolchain" in message(case_of("c-toolchain-base"), BUILD_IMAGE)


def test_build_tree_message_names_the_directory_and_the_stage() -> None:
    assert message(case_of("node-build-tree"), BUILD_TREE).startswith(
        "`COPY --from=build /app /app` copies `/app`, stage `build`'s WORKDIR, into the image"
    )


# --- Inline cases: one rule's edges each ------------------------------------------------------------


def run(
    dockerfile: str, files: dict[str, str] | None = None, **options: object
) -> set[tuple[Rule, str, int]]:
    """The findings as (rule, stage, line); `files` is the context with every file's text, or None."""
    context = None if files is None else BuildContext.of(files, files)
    return {
        (finding.rule, finding.stage, finding.line)
        for finding in analyze(dockerfile, context=context, **options)
    }


def rules(dockerfile: str, files: dict[str, str] | None = None, **options: object) -> set[Rule]:
    return {rule for rule, _, _ in run(dockerfile, files, **options)}


SLIM = "FROM alpine:3.20\n"
SECRET_CASES = [
    ("a .env file", {".env": "X=not-a-real-secret"}, "COPY . .", True),
    ("excluded by .dockerignore", {".env": "X=1", ".dockerignore": "**/.env"}, "COPY . .", False),
    ("excluded by COPY --exclude", {"config/.env": "X=1"}, "COPY --exclude=**/.env . .", False),
    ("an example env file", {".env.example": "X=change-me"}, "COPY . .", False),
    ("an env file deeper down", {"config/.env.production": "X=1"}, "COPY config/ /etc/app/", True),
    ("a private key by name", {"deploy/id_ed25519": "x"}, "COPY deploy /deploy", True),
    ("a public key", {"deploy/id_ed25519.pub": "ssh-ed25519 AAAA"}, "COPY deploy /deploy", False),
    ("a kubeconfig", {".kube/config": "x"}, "COPY . .", True),
    ("credentials.json by a wildcard", {"credentials.json": "{}", "app.json": "{}"}, "COPY *.json ./", True),
    ("a wildcard that misses it", {"credentials.json": "{}", "app.yaml": "a: 1"}, "COPY *.yaml ./", False),
    (
        "a certificate-only .pem",
        {"ca.pem": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"},
        "COPY . .",
        False,
    ),
    (
        "an .npmrc reading the token from the environment",
        {".npmrc": "//r/:_authToken=${NPM_TOKEN}\n"},
        "COPY . .",
        False,
    ),
    ("an .npmrc without a token", {".npmrc": "registry=https://registry.npmjs.org/\n"}, "COPY . .", False),
    ("a .pypirc with a password", {".pypirc": "[pypi]\npassword = not-a-real-password\n"}, "COPY . .", True),
    ("a file the copy does not take", {".env": "X=1", "main.go": ""}, "COPY main.go ./", False),
    ("ADD of a URL", {".env": "X=1"}, "ADD https://example.com/server.pem /etc/ssl/", False),
    ("a heredoc", {".env": "X=1"}, "COPY <<EOF /etc/app.conf\nkey=value\nEOF", False),
]


@pytest.mark.parametrize(
    ("files", "copy", "found"), [case[1:] for case in SECRET_CASES], ids=[c[0] for c in SECRET_CASES]
)
def test_secret_in_image_edges(files: dict[str, str], copy: str, found: bool) -> None:
    assert (SECRET in rules(f"{SLIM}WORKDIR /app\n{copy}\nUSER 1000\n", files)) is found


def test_a_secret_copied_only_in_a_stage_the_target_skips_is_not_reported() -> None:
    dockerfile = "FROM alpine:3.20 AS debug\nCOPY . /ctx\nFROM alpine:3.20 AS runtime\nUSER 1000\n"
    assert run(dockerfile, {".env": "X=1"}, target="runtime") == set()
    assert (SECRET, "debug", 2) in run(dockerfile, {".env": "X=1"}, target="debug")


def test_one_finding_per_copy_lists_the_files() -> None:
    files = {".env": "", "a.key": "", "b.key": "", "c.key": "", "d.key": "", "e.key": ""}
    findings = analyze(f"{SLIM}COPY . /app\nUSER 1\n", context=BuildContext.of(files, files))
    (secret,) = [finding for finding in findings if finding.rule is SECRET]
    assert "`.env`, `a.key`, `b.key`, `c.key` and 2 more" in secret.message
    assert "Exclude them in `.dockerignore`" in secret.message


INSTALLS = [
    ("npm install", {"package.json": "{}"}, "npm install", "`package.json`"),
    ("npm install -g is no project install", {"package.json": "{}"}, "npm install -g pnpm", None),
    (
        "bare yarn",
        {"package.json": "{}", "yarn.lock": ""},
        "yarn --frozen-lockfile",
        "`package.json`, `yarn.lock`",
    ),
    (
        "pnpm",
        {"package.json": "{}", "pnpm-lock.yaml": ""},
        "pnpm install --frozen-lockfile",
        "`pnpm-lock.yaml`",
    ),
    (
        "pip -r in a subdirectory",
        {"requirements/prod.txt": ""},
        "pip install -r requirements/prod.txt",
        "`requirements/prod.txt`",
    ),
    (
        "python -m pip --requirement=",
        {"requirements.txt": ""},
        "python3 -m pip install --requirement=requirements.txt",
        "`requirements.txt`",
    ),
    (
        "poetry",
        {"pyproject.toml": "", "poetry.lock": ""},
        "poetry install --no-root",
        "`pyproject.toml`, `poetry.lock`",
    ),
    (
        "go mod download after env and sudo",
        {"go.mod": ""},
        "GOFLAGS=-mod=mod sudo go mod download",
        "`go.mod`",
    ),
    ("maven wrapper", {"pom.xml": ""}, "./mvnw -B dependency:go-offline", "`pom.xml`"),
    (
        "cargo build",
        {"Cargo.toml": "", "Cargo.lock": ""},
        "cargo build --release",
        "`Cargo.toml`, `Cargo.lock`",
    ),
    ("bundle", {"Gemfile": "", "Gemfile.lock": ""}, "bundle install", "`Gemfile`, `Gemfile.lock`"),
    ("composer", {"composer.json": ""}, "composer install --no-dev", "`composer.json`"),
    ("cd into a subdirectory", {"web/package.json": "{}"}, "cd web && npm ci", "`web/package.json`"),
    (
        "a heredoc script",
        {"requirements.txt": ""},
        "<<EOF\nset -e\npip install -r requirements.txt\nEOF",
        "`requirements.txt`",
    ),
    ("the manifest is not in the context", {"main.go": ""}, "go mod download", None),
    ("no install at all", {"go.mod": ""}, "go build ./...", None),
]


@pytest.mark.parametrize(
    ("files", "script", "named"), [case[1:] for case in INSTALLS], ids=[c[0] for c in INSTALLS]
)
def test_copy_all_before_dependencies_edges(files: dict[str, str], script: str, named: str | None) -> None:
    findings = analyze(
        f"{SLIM}WORKDIR /src\nCOPY . .\nRUN {script}\nUSER 1\n", context=BuildContext.of(files)
    )
    texts = [finding.message for finding in findings if finding.rule is COPY_ALL]
    if named is None:
        assert texts == []
    else:
        (text,) = texts
        assert named in text


def test_copy_all_is_fine_after_the_install_in_another_stage_or_when_ignored() -> None:
    manifests = {"package.json": "{}", "package-lock.json": "{}"}
    after = f"{SLIM}COPY package*.json ./\nRUN npm ci\nCOPY . .\nRUN npm run build\nUSER 1\n"
    other_stage = f"{SLIM}COPY . /app\nFROM node:20-slim\nWORKDIR /app\nRUN npm ci\nUSER 1\n"
    ignored = {**manifests, ".dockerignore": "package*.json"}
    assert COPY_ALL not in rules(after, manifests)
    assert COPY_ALL not in rules(other_stage, manifests)
    assert COPY_ALL not in rules(f"{SLIM}COPY . .\nRUN npm ci\nUSER 1\n", ignored)


BUILD_TREE_CASES = [
    ("the whole filesystem by index", "COPY --from=0 / /", True),
    ("the whole filesystem as `.`", "COPY --from=build . /srv", True),
    ("the WORKDIR with a trailing slash", "COPY --from=build /src/app/ ./", True),
    ("the WORKDIR relative to the stage root", "COPY --from=build src/app /app", True),
    ("a parent of the WORKDIR", "COPY --from=build /src ./", True),
    ("where sources were copied", "COPY --from=build /opt/web /opt/web", True),
    ("a built directory inside the WORKDIR", "COPY --from=build /src/app/dist ./dist", False),
    ("a binary", "COPY --from=build /out/app /app", False),
    ("an image, not a stage", "COPY --from=nginx:1.27 /etc/nginx /etc/nginx", False),
]


@pytest.mark.parametrize(
    ("copy", "found"), [case[1:] for case in BUILD_TREE_CASES], ids=[c[0] for c in BUILD_TREE_CASES]
)
def test_final_stage_copies_build_tree_edges(copy: str, found: bool) -> None:
    dockerfile = (
        "FROM golang:1.22 AS build\nWORKDIR /src/app\nCOPY . .\nCOPY web/ /opt/web/\n"
        "RUN go build -o /out/app\n"
        f"FROM alpine:3.20\n{copy}\nUSER 1\n"
    )
    files = {"go.mod": "", "main.go": "", "web/index.html": ""}
    assert (BUILD_TREE in rules(dockerfile, files)) is found


BUILD_IMAGE_CASES = [
    ("rust", "FROM rust:1.81-slim", True),
    ("gcc", "FROM gcc:14", True),
    ("the .NET SDK", "FROM mcr.microsoft.com/dotnet/sdk:8.0", True),
    ("the full node image on a mirror", "FROM mirror.example.com/library/node:22", True),
    ("openjdk", "FROM openjdk:21-jdk-slim", True),
    ("node alpine", "FROM node:22-alpine", False),
    ("a JRE", "FROM eclipse-temurin:21-jre-alpine", False),
    ("the .NET runtime", "FROM mcr.microsoft.com/dotnet/aspnet:8.0", False),
    ("python slim", "FROM python:3.12-slim-bookworm", False),
    ("a golang image of another owner", "FROM example/golang:1", False),
]


@pytest.mark.parametrize(
    ("base", "found"), [case[1:] for case in BUILD_IMAGE_CASES], ids=[c[0] for c in BUILD_IMAGE_CASES]
)
def test_final_stage_on_build_image_edges(base: str, found: bool) -> None:
    assert (BUILD_IMAGE in rules(f"{base}\nUSER 1\n")) is found


def test_a_target_from_a_building_stage_is_on_a_build_image_unlike_one_from_a_dependency_stage() -> None:
    builds = "FROM alpine:3.20 AS build\nRUN apk add gcc musl-dev && gcc -o /app main.c\nFROM build\nUSER 1\n"
    deps = "FROM python:3.12-slim AS deps\nRUN pip install -r requirements.txt\nFROM deps\nUSER 1\n"
    assert run(builds) >= {(BUILD_IMAGE, "stage-1", 3)}
    assert BUILD_IMAGE not in rules(deps)


TEST_CASES = [
    (
        "copying a marker from the test stage",
        "FROM build AS test\nRUN go test ./... && touch /ok\n",
        "COPY --from=test /ok /ok",
        False,
    ),
    ("a test stage by its command", "FROM build AS ci\nRUN go test ./...\n", "", True),
    ("a test stage by its name", "FROM build AS unit-tests\nRUN ./run-all.sh\n", "", True),
    (
        "a test stage by its test files",
        "FROM build AS verify\nCOPY calc_test.c .\nRUN cc calc_test.c && ./a.out\n",
        "",
        True,
    ),
    ("a debug stage is no test stage", "FROM build AS debug\nRUN apk add gdb\n", "", False),
    ("a test stage without steps", "FROM build AS test\n", "", False),
]


@pytest.mark.parametrize(
    ("stage", "copy", "found"), [case[1:] for case in TEST_CASES], ids=[c[0] for c in TEST_CASES]
)
def test_test_stage_not_built_edges(stage: str, copy: str, found: bool) -> None:
    dockerfile = f"FROM golang:1.22 AS build\nRUN go build -o /app\n{stage}FROM alpine:3.20\n{copy}\nUSER 1\n"
    assert (TEST_STAGE in rules(dockerfile)) is found


ROOT_CASES = [
    ("no USER", "FROM alpine:3.20\n", True),
    ("USER 0:0", "FROM alpine:3.20\nUSER 0:0\n", True),
    ("USER root after a non-root one", "FROM alpine:3.20\nUSER app\nUSER root\n", True),
    ("a non-root USER", "FROM alpine:3.20\nUSER app:app\n", False),
    ("a USER inherited through FROM <stage>", "FROM alpine:3.20 AS base\nUSER 10001\nFROM base\n", False),
    ("distroless nonroot", "FROM gcr.io/distroless/static-debian12:nonroot\n", False),
    ("a USER from the base image's ENV", "FROM mcr.microsoft.com/dotnet/aspnet:8.0\nUSER $APP_UID\n", False),
]


@pytest.mark.parametrize(
    ("dockerfile", "found"), [case[1:] for case in ROOT_CASES], ids=[c[0] for c in ROOT_CASES]
)
def test_runs_as_root_edges(dockerfile: str, found: bool) -> None:
    assert (ROOT in rules(dockerfile)) is found


def test_runs_as_root_points_at_the_user_root_line() -> None:
    assert run("FROM alpine:3.20\nUSER app\nRUN true\nUSER root\n") == {(ROOT, "stage-0", 4)}


UNPINNED_CASES = [
    ("no tag", "FROM alpine\nUSER 1\n", True),
    ("latest through an ARG", "ARG BASE=alpine:latest\nFROM ${BASE}\nUSER 1\n", True),
    ("latest with a digest", f"FROM alpine:latest@sha256:{'a' * 64}\nUSER 1\n", False),
    ("a registry port is no tag", "FROM registry.test:5000/alpine\nUSER 1\n", True),
    ("a version tag", "FROM alpine:3.20\nUSER 1\n", False),
    ("scratch", "FROM scratch\nUSER 1\n", False),
    ("a stage the target skips", "FROM alpine AS tools\nFROM alpine:3.20\nUSER 1\n", False),
]


@pytest.mark.parametrize(
    ("dockerfile", "found"), [case[1:] for case in UNPINNED_CASES], ids=[c[0] for c in UNPINNED_CASES]
)
def test_unpinned_base_image_edges(dockerfile: str, found: bool) -> None:
    assert (UNPINNED in rules(dockerfile)) is found


# --- The analysis as a whole ------------------------------------------------------------------------


def test_without_a_context_the_context_rules_stay_silent() -> None:
    dockerfile, _ = load("go-single-stage")
    assert {rule for rule, _, _ in run(dockerfile)} == {BUILD_IMAGE, ROOT}


def test_findings_are_sorted_errors_first_and_capped() -> None:
    copies = "".join(f"COPY secret{i}.key /k/\n" for i in range(60))
    files = {f"secret{i}.key": "" for i in range(60)}
    findings = analyze(f"FROM alpine\n{copies}", context=BuildContext.of(files))
    assert len(findings) == MAX_FINDINGS
    assert {finding.severity for finding in findings} == {Severity.ERROR}
    assert [finding.line for finding in findings] == list(range(2, 52))


def test_findings_order_is_severity_then_line() -> None:
    findings = findings_for(case_of("go-single-stage"))
    assert [(finding.severity, finding.line) for finding in findings] == [
        (Severity.ERROR, 3),
        (Severity.WARNING, 1),
        (Severity.WARNING, 3),
        (Severity.INFO, 1),
    ]


@pytest.mark.parametrize(
    ("dockerfile", "options", "error"),
    [
        ("FROM alpine\n", {"target": "runtime"}, "target stage 'runtime' could not be found"),
        ("FROM alpine\nRUN <<EOF\n", {}, "unterminated heredoc"),
        ("FROM alpine\n", {"context": BuildContext.of([], dockerignore="[a")}, ".dockerignore"),
        ("", {}, "no instructions"),
        ("FROM alpine\nCOPY --exclude=[a . .\n", {"context": BuildContext.of(["a"])}, "line 2: --exclude"),
    ],
)
def test_what_buildkit_refuses_raises(dockerfile: str, options: dict[str, object], error: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(error)):
        analyze(dockerfile, **options)


def test_context_paths_are_normalised() -> None:
    context = BuildContext.of(["./a/b", "/c", "d/../e"], {"./a/b": "x"})
    assert context.files == frozenset({"a/b", "c", "e"})
    assert dict(context.contents) == {"a/b": "x"}
