"""We test these aspects, on generated input (hypothesis, derandomized, no database):

- the analysis is total on user input: any Dockerfile text, target, build arguments, context paths,
  file texts and `.dockerignore` give either at most 50 well-formed findings or a DockerfileError,
  never another exception;
- the `.dockerignore` matcher is total too: any pattern list either compiles (and then answers for any
  path) or raises ValueError.

The Dockerfiles are a FROM among lines drawn from instruction fragments (stages, ARGs in FROM,
copies with `--from` and wildcards, heredocs, continuations, mounts, users) and stray text, so that
most of them parse and reach the rules rather than stop in the parser.
"""

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from servicebuild.dockerfile import MAX_FINDINGS, BuildContext, DockerfileError, Rule, Severity, analyze
from servicebuild.dockerfile.ignore import IgnoreMatcher

FUZZ = settings(
    max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)

FRAGMENTS = [
    "ARG BASE=alpine:3.20",
    "ARG TAG",
    "FROM ${BASE:-golang:1.22} AS build",
    "FROM $BASE",
    "FROM build AS test",
    "FROM scratch",
    "FROM node:20",
    "FROM 0",
    "WORKDIR /src",
    "WORKDIR app/$TAG",
    "COPY . .",
    "COPY --from=build /src /src",
    "COPY --from=0 / /",
    "COPY --from=1 . .",
    "COPY --exclude=*.pem *.json ./",
    "COPY <<EOF /x",
    "EOF",
    "ADD https://example.com/a.pem /",
    "RUN npm ci && go test ./...",
    "RUN <<EOF",
    "RUN --mount=type=bind,from=test,target=/t true",
    "RUN cd web && pip install -r requirements.txt",
    "RUN apt-get install -y gcc && gcc -o /app main.c",
    "USER root",
    "USER ${UID:-1000}",
    'ENV A=1 B="two words"',
    "ENV LEGACY value with spaces",
    "# escape=`",
    "# comment",
    "\\",
    "",
]
lines = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=30))
first_stages = st.sampled_from(
    ["FROM ${BASE:-golang:1.22} AS build", "FROM scratch", "FROM node:20 AS runtime"]
)
dockerfiles = st.tuples(st.lists(lines, max_size=3), first_stages, st.lists(lines, max_size=25)).map(
    lambda parts: "\n".join([*parts[0], parts[1], *parts[2]])
)
paths = st.one_of(
    st.sampled_from(
        [".env", "package.json", "requirements.txt", "certs/a.pem", ".npmrc", "src/main.go", "go.mod"]
    ),
    st.text(min_size=1, max_size=20),
)
pattern = st.one_of(
    st.sampled_from(["*", "!src", "**/*.pem", "!**/*.json", ".env*", "src/[a-c]*", "/certs/", "**"]),
    st.text(max_size=10),
)
patterns = st.lists(pattern, max_size=6)
malformed = st.sampled_from(["[a-", "\\", "!", "x[]"])


@FUZZ
@given(
    dockerfile=dockerfiles,
    target=st.sampled_from([None, None, None, "build", "test"]),
    build_args=st.dictionaries(
        st.sampled_from(["BASE", "TAG", "UID", "X"]), st.text(max_size=20), max_size=3
    ),
    files=st.dictionaries(paths, st.text(max_size=40), max_size=8),
    dockerignore=patterns.map("\n".join),
)
def test_analysis_is_total(
    dockerfile: str, target: str | None, build_args: dict[str, str], files: dict[str, str], dockerignore: str
) -> None:
    context = BuildContext.of(files, files, dockerignore=dockerignore)
    try:
        findings = analyze(dockerfile, target=target, build_args=build_args, context=context)
    except DockerfileError as error:
        event(f"refused: {str(error).split(':')[-1].strip()[:30]}")
        return
    event("findings" if findings else "no finding")
    assert len(findings) <= MAX_FINDINGS
    for finding in findings:
        assert finding.rule in Rule
        assert finding.severity in Severity
        assert finding.line >= 1
        assert finding.stage
        assert finding.message.endswith(".")


@FUZZ
@given(patterns=st.lists(st.one_of(pattern, malformed), max_size=6), path=paths)
def test_ignore_matching_is_total(patterns: list[str], path: str) -> None:
    try:
        matcher = IgnoreMatcher(patterns)
    except ValueError:
        return
    assert matcher.excludes(path) in {True, False}
