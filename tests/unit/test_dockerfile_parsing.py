"""We test these aspects:

- instructions are read as BuildKit's parser reads them: keywords in any case, line continuations
  (comment and blank lines inside dropped, an escaped escape character not continuing, the
  `# escape=` directive), flags before the arguments, the JSON form, heredocs (several on one line,
  `<<-` dropping tabs, quoted names) with the lines after them;
- ARGs reach `FROM` as in BuildKit: global defaults, build arguments overriding only declared ARGs,
  defaults built from earlier ARGs, `${VAR:-default}` and friends, quotes; automatic platform ARGs;
- stages: names case-insensitive, WORKDIR resolved and inherited through `FROM <stage>`, USER and ENV
  likewise, COPY destinations resolved against WORKDIR;
- the stages a target needs: through `FROM <stage>`, `COPY --from=<name>`, `COPY --from=<index>`,
  `RUN --mount=…,from=<stage>`; an image in `--from` is no stage;
- what BuildKit refuses raises DockerfileError: no instruction, no stage, an unterminated heredoc,
  an unknown target, a blank base.
"""

import pytest

from servicebuild.dockerfile.stages import parse_dockerfile
from servicebuild.dockerfile.syntax import DockerfileError, Unresolved, expand, parse_instructions


def test_continuations_drop_comment_and_blank_lines_and_keep_the_first_line() -> None:
    parsed = parse_instructions(
        "FROM golang:1.22\n"
        "RUN --mount=type=cache,target=/root/.cache/go-build \\\n"
        "    go mod download \\\n"
        "    # a comment inside a continuation\n"
        "\n"
        "    && echo done\n"
        "run echo two\n"
    )
    run, lower = parsed.instructions[1:]
    assert (run.keyword, run.line, run.end_line) == ("run", 2, 6)
    assert run.flags == ("--mount=type=cache,target=/root/.cache/go-build",)
    assert " ".join(run.text.split()) == "go mod download && echo done"
    assert (lower.keyword, lower.line) == ("run", 7)


def test_an_escaped_escape_character_does_not_continue() -> None:
    parsed = parse_instructions("FROM alpine\nRUN echo C:\\\\\nRUN echo next\n")
    assert [instruction.line for instruction in parsed.instructions] == [1, 2, 3]


def test_the_escape_directive_changes_the_continuation_character() -> None:
    parsed = parse_instructions("# escape=`\nFROM alpine\nRUN echo one `\n    two\nRUN apk add \\\nCURL\n")
    assert parsed.escape == "`"
    keywords = [(instruction.keyword, instruction.line) for instruction in parsed.instructions]
    assert keywords == [("from", 2), ("run", 3), ("run", 5), ("curl", 6)]


def test_a_directive_after_a_comment_is_a_comment() -> None:
    parsed = parse_instructions("# hello\n# escape=`\nFROM alpine\nRUN a \\\n b\n")
    assert parsed.escape == "\\"
    assert len(parsed.instructions) == 2


def test_heredocs_take_the_lines_after_the_instruction() -> None:
    parsed = parse_instructions(
        "FROM python:3.12-slim\n"
        "RUN <<EOF\n"
        "set -e\n"
        "pip install -r requirements.txt\n"
        "EOF\n"
        "COPY <<-'CONF' /etc/app.conf\n"
        "\tkey=$VALUE\n"
        "\tCONF\n"
        "RUN <<A cat > /a && <<B cat > /b\n"
        "a\n"
        "A\n"
        "b\n"
        "B\n"
        "USER 10001\n"
    )
    run, copy, double, user = parsed.instructions[1:]
    assert (run.line, run.end_line, run.heredocs[0].content) == (
        2,
        5,
        "set -e\npip install -r requirements.txt\n",
    )
    assert (copy.heredocs[0].name, copy.heredocs[0].content, copy.heredocs[0].expand) == (
        "CONF",
        "key=$VALUE\n",
        False,
    )
    assert [(heredoc.name, heredoc.content) for heredoc in double.heredocs] == [("A", "a\n"), ("B", "b\n")]
    assert (user.keyword, user.line) == ("user", 14)


def test_heredocs_only_in_run_copy_and_add_shell_form() -> None:
    parsed = parse_instructions('FROM alpine\nRUN ["sh", "-c", "cat <<EOF"]\nENV X=<<EOF\nCMD echo\n')
    assert [instruction.heredocs for instruction in parsed.instructions] == [(), (), (), ()]
    assert parsed.instructions[1].json_args == ("sh", "-c", "cat <<EOF")


def test_an_unterminated_heredoc_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="unterminated heredoc"):
        parse_instructions("FROM alpine\nRUN <<EOF\necho\n")


def test_flags_take_quotes_and_stop_at_the_arguments() -> None:
    parsed = parse_instructions('FROM a\nCOPY --chown="1000:1000" --link src dst\nCOPY -- --weird /x\n')
    copy, weird = parsed.instructions[1:]
    assert (copy.flags, copy.words) == (("--chown=1000:1000", "--link"), ("src", "dst"))
    assert (copy.flag("chown"), copy.flag("link"), copy.flag("from")) == ("1000:1000", "", None)
    assert (weird.flags, weird.words) == ((), ("--weird", "/x"))


def test_json_form_keeps_spaces_in_arguments() -> None:
    parsed = parse_instructions('FROM a\nCOPY ["a b.txt", "/dst/"]\n')
    assert parsed.instructions[1].words == ("a b.txt", "/dst/")


@pytest.mark.parametrize(
    ("word", "variables", "expected"),
    [
        ("golang:${GO_VERSION}-bookworm", {"GO_VERSION": "1.22"}, "golang:1.22-bookworm"),
        ("$BASE", {"BASE": "alpine:3.20"}, "alpine:3.20"),
        ("${BASE:-scratch}", {}, "scratch"),
        ("${BASE:-scratch}", {"BASE": ""}, "scratch"),
        ("${BASE-scratch}", {"BASE": ""}, ""),
        ("${TAG:+:$TAG}", {"TAG": "1.2"}, ":1.2"),
        ("${TAG:+:$TAG}", {}, ""),
        ("${REGISTRY:-${MIRROR:-docker.io}}/library/node", {}, "docker.io/library/node"),
        ('"quoted:${V}"', {"V": "1"}, "quoted:1"),
        ("'single:${V}'", {"V": "1"}, "single:${V}"),
        ("\\$V", {"V": "1"}, "$V"),
        ("$UNSET-x", {}, "-x"),
        ("price: $", {}, "price: $"),
    ],
)
def test_words_expand_as_in_buildkit(word: str, variables: dict[str, str], expected: str) -> None:
    assert expand(word, variables) == expected


@pytest.mark.parametrize("word", ["${V#prefix}", "${V%.*}", "${V/a/b}", "${V:?required}", "${V"])
def test_unmodelled_expansions_are_unresolved(word: str) -> None:
    with pytest.raises(Unresolved):
        expand(word, {})


ARGS_IN_FROM = """\
ARG REGISTRY=docker.io
ARG GO_VERSION=1.22
ARG BUILDER=${REGISTRY}/library/golang:${GO_VERSION}
ARG RUNTIME="gcr.io/distroless/static-debian12:nonroot"
ARG UNDECLARED_DEFAULT
FROM ${BUILDER} AS build
FROM ${RUNTIME} AS runtime
FROM alpine:${NOT_DECLARED:-3.20} AS other
FROM busybox:${UNDECLARED_DEFAULT:-1.37}-${TARGETARCH} AS arch
"""


def test_global_args_and_their_defaults_reach_from() -> None:
    stages = parse_dockerfile(ARGS_IN_FROM).stages
    assert [stage.image for stage in stages] == [
        "docker.io/library/golang:1.22",
        "gcr.io/distroless/static-debian12:nonroot",
        "alpine:3.20",
        "busybox:1.37-amd64",
    ]


def test_build_args_override_declared_args_only() -> None:
    build_args = {
        "GO_VERSION": "1.23",
        "NOT_DECLARED": "edge",
        "UNDECLARED_DEFAULT": "1.36",
        "TARGETARCH": "arm64",
    }
    stages = parse_dockerfile(ARGS_IN_FROM, build_args).stages
    assert [stage.image for stage in stages] == [
        "docker.io/library/golang:1.23",
        "gcr.io/distroless/static-debian12:nonroot",
        "alpine:3.20",
        "busybox:1.36-arm64",
    ]


def test_a_blank_base_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="should not be blank"):
        parse_dockerfile("ARG BASE\nFROM ${BASE}\n")


STAGES = """\
FROM golang:1.22 AS Build
WORKDIR /src
ENV CGO_ENABLED=0 OUT=/out
COPY go.mod go.sum ./
WORKDIR cmd
COPY . .
RUN go build -o $OUT/app .
USER builder

FROM build AS test
RUN go test ./...

FROM node:22-slim AS assets
WORKDIR /web
RUN --mount=type=bind,from=build,source=/src,target=/src npm ci

FROM gcr.io/distroless/static-debian12 AS runtime
ARG DIR=/app
COPY --from=BUILD /out/app ${DIR}/app
COPY --from=2 /web/dist ${DIR}/static
COPY --from=busybox:1.37 /bin/busybox /bin/busybox
USER 65532
"""


def test_stages_resolve_workdir_env_user_and_destinations() -> None:
    build, test, assets, runtime = parse_dockerfile(STAGES).stages
    assert (build.name, build.workdir, build.user, build.env["OUT"]) == (
        "build",
        "/src/cmd",
        "builder",
        "/out",
    )
    assert [copy.destination for copy in build.copies] == ["/src/", "/src/cmd/"]
    assert (test.base_stage, test.workdir, test.user, test.env["CGO_ENABLED"]) == (
        0,
        "/src/cmd",
        "builder",
        "0",
    )
    assert (assets.label, assets.workdir_set, runtime.workdir_set) == ("assets", True, False)
    assert [(copy.from_stage, copy.destination) for copy in runtime.copies] == [
        (0, "/app/app"),
        (2, "/app/static"),
        (None, "/bin/busybox"),
    ]
    assert build.runs[0].script.startswith("go build -o $OUT/app")


def test_a_target_reaches_stages_through_from_copy_and_mounts() -> None:
    dockerfile = parse_dockerfile(STAGES)
    assert [stage.label for stage in dockerfile.reachable(dockerfile.target(None))] == [
        "build",
        "assets",
        "runtime",
    ]
    assert [stage.label for stage in dockerfile.reachable(dockerfile.target("Test"))] == ["build", "test"]
    assert [stage.label for stage in dockerfile.reachable(dockerfile.target("assets"))] == ["build", "assets"]


def test_unnamed_stages_are_labelled_as_buildkit_labels_them() -> None:
    dockerfile = parse_dockerfile(
        "FROM alpine\nRUN true\nFROM scratch\nCOPY --from=0 /etc/passwd /etc/passwd\n"
    )
    assert [stage.label for stage in dockerfile.reachable(dockerfile.target(None))] == ["stage-0", "stage-1"]


def test_an_unknown_target_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="target stage 'release' could not be found"):
        parse_dockerfile(STAGES).target("release")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no instructions"), ("# just a comment\n\n", "no instructions"), ("ARG X=1\n", "no build stage")],
)
def test_a_dockerfile_without_a_stage_is_an_error(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse_dockerfile(text)
