"""Findings about a Dockerfile, its target and its build context: the project's own rules.

Each rule looks at the stages BuildKit builds for the target (the target and what it depends on),
except `TestStageNotBuilt`, which is about a stage it skips. A finding names the stage as BuildKit's
progress output does (its name, or `stage-<index>`), the line of the instruction to change, and in one
or two sentences what is wrong and the fix. Findings come sorted (errors first, then by line) and at
most `MAX_FINDINGS` of them.

How `TestStageNotBuilt` tells users to make the target depend on the tests: when the test stage is
built on a stage the target copies artifacts from (`FROM build AS test` and `COPY --from=build`), copy
them `--from=test` instead — the test stage holds the same files, so the image is unchanged, and
BuildKit must now run the tests first; otherwise end the test step with `&& touch /tests-passed` and
`COPY --from=test /tests-passed /tests-passed` into the target (an empty file; `COPY` needs no shell,
so this works on `scratch` and distroless too). Copying into `/dev/null` is no idiom: it would write
a file over the device node in the image's layer.
"""

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from servicebuild.dockerfile.commands import (
    Command,
    Install,
    commands,
    install_of,
    installs_system_packages,
    is_build_command,
    is_compile_command,
    is_test_command,
    is_test_file,
    parse_image_name,
    toolchain_of,
)
from servicebuild.dockerfile.ignore import IgnoreMatcher
from servicebuild.dockerfile.stages import Copy, Dockerfile, Stage, parse_dockerfile
from servicebuild.dockerfile.syntax import DockerfileError

MAX_FINDINGS = 50
MAX_NAMED_FILES = 4
"""How many files a message lists before `and N more`."""


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class Rule(StrEnum):
    FINAL_STAGE_COPIES_BUILD_TREE = "FinalStageCopiesBuildTree"
    COPY_ALL_BEFORE_DEPENDENCIES = "CopyAllBeforeDependencies"
    SECRET_IN_IMAGE = "SecretInImage"  # noqa: S105 - a rule's name
    FINAL_STAGE_ON_BUILD_IMAGE = "FinalStageOnBuildImage"
    TEST_STAGE_NOT_BUILT = "TestStageNotBuilt"
    RUNS_AS_ROOT = "RunsAsRoot"
    UNPINNED_BASE_IMAGE = "UnpinnedBaseImage"


@dataclass(frozen=True)
class Finding:
    rule: Rule
    severity: Severity
    stage: str
    line: int
    message: str


@dataclass(frozen=True)
class BuildContext:
    """What the analysis knows of the build context; paths are relative and `/`-separated."""

    files: frozenset[str]
    """Every file in the context directory, before `.dockerignore` applies."""
    contents: Mapping[str, str] = field(default_factory=dict)
    """The text of the small files the rules read (`.npmrc`, `.pypirc`, `*.pem`), by path."""
    dockerignore: str = ""
    """The ignore file BuildKit uses (`<Dockerfile>.dockerignore` beside the Dockerfile, else
    `.dockerignore` at the context root); empty when there is none."""

    @classmethod
    def of(
        cls, files: Iterable[str], contents: Mapping[str, str] | None = None, dockerignore: str | None = None
    ) -> "BuildContext":
        """A context from paths as listed (`./a`, `/a` and `a` are the same file)."""
        contents = {_relative(path): text for path, text in (contents or {}).items()}
        if dockerignore is None:
            dockerignore = contents.get(".dockerignore", "")
        return cls(frozenset(_relative(path) for path in files), contents, dockerignore)


def _relative(path: str) -> str:
    return posixpath.normpath("/" + path).lstrip("/")


def analyze(
    dockerfile: str,
    *,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    context: BuildContext | None = None,
) -> list[Finding]:
    """The findings for building `target` (default: the last stage) of a Dockerfile.

    Without a context the rules that need its files (`CopyAllBeforeDependencies`, `SecretInImage`)
    stay silent. Raises DockerfileError (a ValueError) for a Dockerfile, target or `.dockerignore`
    BuildKit would refuse: the build fails with its own message then.
    """
    parsed = parse_dockerfile(dockerfile, build_args)
    target_stage = parsed.target(target)
    analysis = _Analysis(parsed, target_stage, _sent_files(context), context)
    findings = [
        *analysis.final_stage_copies_build_tree(),
        *analysis.copy_all_before_dependencies(),
        *analysis.secret_in_image(),
        *analysis.final_stage_on_build_image(),
        *analysis.test_stage_not_built(),
        *analysis.runs_as_root(),
        *analysis.unpinned_base_image(),
    ]
    findings.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.line, f.rule, f.stage, f.message))
    return findings[:MAX_FINDINGS]


def _sent_files(context: BuildContext | None) -> frozenset[str]:
    """The files BuildKit sends: the context less what `.dockerignore` excludes."""
    if context is None:
        return frozenset()
    try:
        matcher = IgnoreMatcher.from_text(context.dockerignore)
    except ValueError as error:
        raise DockerfileError(f".dockerignore: {error}") from error
    return frozenset(path for path in context.files if not matcher.excludes(path))


def _code(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return f"`{text if len(text) <= limit else text[: limit - 1] + '…'}`"


def _names(paths: Iterable[str], *, sort: bool = True) -> str:
    listed = sorted(paths) if sort else list(paths)
    shown = ", ".join(f"`{path}`" for path in listed[:MAX_NAMED_FILES])
    more = len(listed) - MAX_NAMED_FILES
    return f"{shown} and {more} more" if more > 0 else shown


def _is_under(path: str, directory: str) -> bool:
    directory = directory.rstrip("/") or "/"
    return path == directory or path.startswith(directory if directory == "/" else directory + "/")


@dataclass
class _Analysis:
    dockerfile: Dockerfile
    target: Stage
    sent: frozenset[str]
    context: BuildContext | None

    def __post_init__(self) -> None:
        self.reachable = self.dockerfile.reachable(self.target)

    # --- FinalStageCopiesBuildTree -------------------------------------------------------------

    def final_stage_copies_build_tree(self) -> Iterable[Finding]:
        for copy in self.target.copies:
            if copy.from_stage is None:
                continue
            source_stage = self.dockerfile.stages[copy.from_stage]
            trees = self._build_trees(source_stage)
            for source in copy.sources:
                path = posixpath.normpath("/" + source.removesuffix("/*").removesuffix("/.").lstrip("/"))
                what = next((label for tree, label in trees if _is_under(tree, path)), None)
                if what is None:
                    continue
                yield Finding(
                    Rule.FINAL_STAGE_COPIES_BUILD_TREE,
                    Severity.WARNING,
                    self.target.label,
                    copy.instruction.line,
                    f"{_code(copy.instruction.original)} copies {what} into the image, with the sources, "
                    "caches and build tools it holds. "
                    f"Copy only the built artifacts (the binary, `dist/`, the jar, the venv), "
                    f"e.g. `COPY --from={copy.from_ref} {path.rstrip('/')}/<artifact> <destination>`.",
                )
                break

    def _build_trees(self, stage: Stage) -> list[tuple[str, str]]:
        """Directories whose copy brings the build along: `/`, the WORKDIR, where sources were copied."""
        trees = [("/", f"the whole filesystem of stage `{stage.label}`")]
        if stage.workdir_set and stage.workdir != "/":
            trees.append((stage.workdir, f"`{stage.workdir}`, stage `{stage.label}`'s WORKDIR,"))
        for member in self.dockerfile.chain(stage):
            for copy in member.copies:
                if copy.from_context and any(self._is_directory(source) for source in copy.sources):
                    destination = copy.destination.rstrip("/") or "/"
                    if destination != "/":
                        trees.append(
                            (destination, f"`{destination}`, where stage `{member.label}` copied sources to,")
                        )
        return trees

    def _is_directory(self, source: str) -> bool:
        relative = _relative(source)
        if relative in {"", "."}:
            return True
        if self.context is None:
            return source.endswith("/")
        return any(path.startswith(relative + "/") for path in self.context.files)

    # --- CopyAllBeforeDependencies -------------------------------------------------------------

    def copy_all_before_dependencies(self) -> Iterable[Finding]:
        if self.context is None:
            return
        for stage in self.reachable:
            pending: list[Copy] = []
            flagged: set[int] = set()
            copies = {copy.instruction.line: copy for copy in stage.copies}
            runs = {run.instruction.line: run for run in stage.runs}
            for instruction in stage.instructions:
                copy = copies.get(instruction.line)
                if copy is not None and copy.from_context and _copies_whole_context(copy):
                    pending.append(copy)
                run = runs.get(instruction.line)
                if run is None or not pending:
                    continue
                for command in commands(run.script, run.workdir):
                    install = install_of(command)
                    if install is None:
                        continue
                    for copy_all in pending:
                        finding = self._copy_all_finding(
                            stage, copy_all, command, install, run.instruction.line
                        )
                        if finding is not None and copy_all.instruction.line not in flagged:
                            flagged.add(copy_all.instruction.line)
                            yield finding

    def _copy_all_finding(
        self, stage: Stage, copy_all: Copy, command: Command, install: Install, run_line: int
    ) -> Finding | None:
        def in_context(name: str) -> str | None:
            image_path = posixpath.normpath(posixpath.join(command.cwd, name))
            if not _is_under(image_path, copy_all.destination):
                return None
            relative = posixpath.relpath(image_path, copy_all.destination.rstrip("/") or "/")
            return relative if relative in self.sent else None

        primary = [path for path in map(in_context, install.primary) if path]
        if not primary:
            return None
        files = [*primary, *(path for path in map(in_context, install.optional) if path)]
        destination = copy_all.instruction.words[-1]
        destination = destination if destination.endswith("/") else f"{destination}/"
        example = "" if any("/" in path for path in files) else f" (`COPY {' '.join(files)} {destination}`)"
        return Finding(
            Rule.COPY_ALL_BEFORE_DEPENDENCIES,
            Severity.WARNING,
            stage.label,
            copy_all.instruction.line,
            f"{_code(copy_all.instruction.original)} comes before `{install.tool}` (line {run_line}), "
            "so a change to any file re-runs the install. "
            f"Copy {_names(files, sort=False)} first{example}, install, then copy the rest.",
        )

    # --- SecretInImage -------------------------------------------------------------------------

    def secret_in_image(self) -> Iterable[Finding]:
        if self.context is None:
            return
        for stage in self.reachable:
            for copy in stage.copies:
                if not copy.from_context:
                    continue
                copied = _copied_files(copy, self.sent)
                secrets: dict[Severity, list[str]] = {}
                for path in copied:
                    severity = self._secret_severity(path)
                    if severity is not None:
                        secrets.setdefault(severity, []).append(path)
                for severity, paths in secrets.items():
                    yield self._secret_finding(stage, copy, severity, paths)

    def _secret_severity(self, path: str) -> Severity | None:
        name = posixpath.basename(path)
        contents = self.context.contents if self.context else {}
        if name in {".npmrc", ".pypirc"}:
            if path not in contents:
                return Severity.WARNING
            token = _NPM_TOKEN if name == ".npmrc" else _PYPI_PASSWORD
            return Severity.ERROR if token.search(contents[path]) else None
        if name.endswith(".pem") and path in contents and "PRIVATE KEY" not in contents[path]:
            return None  # certificates only: public
        if _SECRET_NAME.match(name) or _SECRET_PATH.search(path):
            return Severity.ERROR
        return None

    def _secret_finding(self, stage: Stage, copy: Copy, severity: Severity, paths: list[str]) -> Finding:
        holder = (
            "the image"
            if stage is self.target
            else "the registry cache (with `mode=max` it holds this stage's layers)"
        )
        them = "it" if len(paths) == 1 else "them"
        copies = f"{_code(copy.instruction.original)} copies {_names(paths)} into stage `{stage.label}`"
        if severity is Severity.ERROR:
            first = f"{copies}: anyone who can pull {holder} can read {them}."
        else:
            holds = "holds" if them == "it" else "hold"
            first = f"{copies}: if {them} {holds} a registry token, so does {holder}."
        fix = (
            f"Exclude {them} in `.dockerignore` and give the step that needs a secret "
            "`RUN --mount=type=secret,id=<name>,target=<path>` instead."
        )
        return Finding(Rule.SECRET_IN_IMAGE, severity, stage.label, copy.instruction.line, f"{first} {fix}")

    # --- FinalStageOnBuildImage ----------------------------------------------------------------

    def final_stage_on_build_image(self) -> Iterable[Finding]:
        target = self.target
        if target.base_stage is not None:
            parent = self.dockerfile.stages[target.base_stage]
            if self._builds(parent):
                yield Finding(
                    Rule.FINAL_STAGE_ON_BUILD_IMAGE,
                    Severity.WARNING,
                    target.label,
                    target.line,
                    f"The target `{target.label}` starts `FROM {parent.label}`, a stage that builds, so the "
                    "image ships its toolchain, sources and caches. Start the target from a runtime image "
                    f"and `COPY --from={parent.label}` only the built artifacts.",
                )
            return
        if target.image is None:
            return
        toolchain = toolchain_of(parse_image_name(target.image))
        if toolchain is not None:
            yield Finding(
                Rule.FINAL_STAGE_ON_BUILD_IMAGE,
                Severity.WARNING,
                target.label,
                target.line,
                f"The target `{target.label}` starts from `{target.image}`, which carries {toolchain.what} "
                "into the image. Build in an earlier stage and start the target from a runtime image "
                f"such as {toolchain.runtime}, copying only the built artifacts.",
            )
            return
        for stage in self.reachable:
            if (
                stage is not target
                and stage.image == target.image
                and self._builds_with_base_toolchain(stage)
            ):
                yield Finding(
                    Rule.FINAL_STAGE_ON_BUILD_IMAGE,
                    Severity.WARNING,
                    target.label,
                    target.line,
                    f"The target `{target.label}` starts from `{target.image}`, the image stage "
                    f"`{stage.label}` compiles in without installing a toolchain, so the toolchain ships "
                    "too. Start the target from a smaller runtime image and copy only the built artifacts.",
                )
                return

    def _builds(self, stage: Stage) -> bool:
        """Whether a stage (or one it starts from) compiles, runs a JavaScript build, or is on an SDK
        image; installing dependencies alone (`pip install`) is no build."""
        for member in self.dockerfile.chain(stage):
            if member.image is not None and toolchain_of(parse_image_name(member.image)) is not None:
                return True
            for run in member.runs:
                if any(is_build_command(command) for command in commands(run.script, run.workdir)):
                    return True
        return False

    def _builds_with_base_toolchain(self, stage: Stage) -> bool:
        """Whether a stage compiles with what its base image brings (it installs no OS packages)."""
        compiles = False
        for member in self.dockerfile.chain(stage):
            for run in member.runs:
                for command in commands(run.script, run.workdir):
                    if installs_system_packages(command):
                        return False
                    compiles = compiles or is_compile_command(command)
        return compiles

    # --- TestStageNotBuilt ---------------------------------------------------------------------

    def test_stage_not_built(self) -> Iterable[Finding]:
        reached = {stage.index for stage in self.reachable}
        for stage in self.dockerfile.stages:
            if stage.index in reached or not self._runs_tests(stage):
                continue
            yield Finding(
                Rule.TEST_STAGE_NOT_BUILT,
                Severity.WARNING,
                stage.label,
                stage.line,
                f"Stage `{stage.label}` runs tests, but the target `{self.target.label}` does not depend on "
                "it, so BuildKit skips it and the tests never run. " + self._depend_on(stage),
            )

    def _runs_tests(self, stage: Stage) -> bool:
        if stage.name and any(
            part in {"test", "tests", "unittest", "unittests"} for part in re.split(r"[-_.]", stage.name)
        ):
            return bool(stage.runs)
        for run in stage.runs:
            if any(is_test_command(command) for command in commands(run.script, run.workdir)):
                return True
        return any(is_test_file(source) for copy in stage.copies for source in copy.sources) and bool(
            stage.runs
        )

    def _depend_on(self, test: Stage) -> str:
        ancestors = {member.index for member in self.dockerfile.chain(test)}
        for copy in self.target.copies:
            if copy.from_stage is not None and copy.from_stage in ancestors and copy.from_stage != test.index:
                rewritten = re.sub(r"--from=\S+", f"--from={test.label}", copy.instruction.original, count=1)
                return (
                    f"Copy the artifacts from it instead: `{test.label}` is built on "
                    f"`{self.dockerfile.stages[copy.from_stage].label}`, so {_code(rewritten)} "
                    f"(line {copy.instruction.line}) copies the same files, only after the tests pass."
                )
        return (
            f"End its test step with `&& touch /tests-passed` and add "
            f"`COPY --from={test.label} /tests-passed /tests-passed` to `{self.target.label}`, "
            "so the image is built only after the tests pass."
        )

    # --- RunsAsRoot ----------------------------------------------------------------------------

    def runs_as_root(self) -> Iterable[Finding]:
        target = self.target
        user = target.user
        if user is not None and user.partition(":")[0] not in {"root", "0"}:
            return
        if user is None:
            base = next((member.image for member in self.dockerfile.chain(target) if member.image), None)
            if base is not None and _runs_as_non_root(base):
                return
        line = target.user_line if user is not None and target.user_line is not None else target.line
        said = f"sets `USER {user}`" if user is not None else "sets no `USER`"
        yield Finding(
            Rule.RUNS_AS_ROOT,
            Severity.INFO,
            target.label,
            line,
            f"The target `{target.label}` {said}, so the service runs as root. "
            "Add a non-root `USER` (e.g. `USER 10001:10001`) after the steps that need root.",
        )

    # --- UnpinnedBaseImage ---------------------------------------------------------------------

    def unpinned_base_image(self) -> Iterable[Finding]:
        for stage in self.reachable:
            if stage.image is None or stage.image == "scratch":
                continue
            image = parse_image_name(stage.image)
            if image.digest is not None or image.tag not in {None, "latest"}:
                continue
            said = "has no tag" if image.tag is None else "uses the tag `latest`"
            yield Finding(
                Rule.UNPINNED_BASE_IMAGE,
                Severity.INFO,
                stage.label,
                stage.line,
                f"The base `{stage.image}` of stage `{stage.label}` {said}, so a rebuild may pick up "
                "another image. Pin a version tag (e.g. `:1.2.3`), or a digest (`@sha256:…`) as well.",
            )


_SECRET_NAME = re.compile(
    r"^(\.env(?!\.(example|sample|template|dist|defaults)$)(\..+)?|.+\.pem|.+\.key"
    r"|id_(rsa|dsa|ecdsa|ed25519)(?!.*\.pub$).*|\.git-credentials|credentials\.json"
    r"|kubeconfig(\.ya?ml)?|.+\.kubeconfig)$"
)
_SECRET_PATH = re.compile(r"(^|/)(\.kube/config|\.aws/credentials|\.docker/config\.json)$")
# A value that is an environment reference (`${NPM_TOKEN}`) is no token: npm reads it at run time.
_NPM_TOKEN = re.compile(r"(_authToken|_auth|_password)\s*=\s*(?!\$\{)\S", re.IGNORECASE)
_PYPI_PASSWORD = re.compile(r"^\s*password\s*[=:]\s*(?!\$\{)\S", re.IGNORECASE | re.MULTILINE)
_NON_ROOT_IMAGE = re.compile(r"nonroot|non-root|^cgr\.dev/chainguard/")


def _runs_as_non_root(image: str) -> bool:
    """Base images known to set a non-root USER themselves (distroless `:nonroot`, Chainguard)."""
    return bool(_NON_ROOT_IMAGE.search(image))


def _copies_whole_context(copy: Copy) -> bool:
    return any(_relative(source) in {"", "."} for source in copy.sources)


def copied_context_files(instruction: str, files: Iterable[str]) -> list[str] | None:
    """Which of the context `files` a `COPY` or `ADD` (one instruction, as a BuildKit step names it) takes;
    None for another instruction, a copy from a stage or an image, or one BuildKit would refuse."""
    try:
        copies = parse_dockerfile(f"FROM scratch\n{instruction}\n").stages[0].copies
        return _copied_files(copies[0], frozenset(files)) if copies and copies[0].from_context else None
    except DockerfileError:
        return None


def _copied_files(copy: Copy, sent: Iterable[str]) -> list[str]:
    """The context files (of `sent`) a COPY or ADD takes: its sources (wildcards, directories), less
    `--exclude`."""
    try:
        excludes = IgnoreMatcher(list(copy.excludes)) if copy.excludes else None
    except ValueError as error:
        raise DockerfileError(f"--exclude: {error}", copy.instruction.line) from error
    files: dict[str, None] = {}
    for source in copy.sources:
        if re.match(r"^[a-z][a-z0-9+.-]*://|^git@", source):
            continue  # ADD of a URL or a git repository, not the context
        pattern = _relative(source)
        for path in sorted(sent):
            covered = _source_covers(pattern, path)
            if covered is not None and not (excludes is not None and excludes.excludes(covered)):
                files[path] = None
    return list(files)


def _source_covers(pattern: str, path: str) -> str | None:
    """Whether a COPY source (relative, maybe with wildcards) takes a context file; then the file's path
    relative to what the source matched (for `--exclude`), else None."""
    if pattern in {"", "."}:
        return path
    parts = pattern.split("/")
    path_parts = path.split("/")
    if len(path_parts) < len(parts):
        return None
    if all(_glob_segment(part, name) for part, name in zip(parts, path_parts, strict=False)):
        rest = "/".join(path_parts[len(parts) :])
        return rest or path_parts[-1]
    return None


def _glob_segment(pattern: str, name: str) -> bool:
    """Go's `filepath.Match` for one path segment: `*`, `?`, `[...]` and `\\` escapes."""
    if not any(char in pattern for char in "*?[\\"):
        return pattern == name
    regex = ""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        position += 1
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "\\" and position < len(pattern):
            regex += re.escape(pattern[position])
            position += 1
        elif char == "[":
            end = pattern.find("]", position + 1)
            if end < 0:
                return False
            body = pattern[position:end]
            regex += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            position = end + 1
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, name) is not None
