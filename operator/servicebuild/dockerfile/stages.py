"""A Dockerfile as build stages: bases with ARGs substituted, working directories, users, copies,
and which stages a target needs, as BuildKit's `dockerfile2llb` decides them.

- Global `ARG`s (before the first `FROM`) take the given build argument, else their default (which
  may use earlier global ARGs); only they, and the automatic platform ARGs (`TARGETOS`, `BUILDARCH`, …,
  taken as linux/amd64 unless given), are seen by `FROM`. A build argument no ARG declares is not.
- Inside a stage, `ARG NAME` takes the build argument, else its own default, else the global default;
  `ENV` overrides ARG; a stage started `FROM` another stage inherits its ENV, WORKDIR and USER.
- Stage names are case-insensitive. `FROM <stage>`, `COPY|ADD --from=<name|index>` and
  `RUN --mount=…,from=<name|index>` make a stage depend on another; a `--from` that names no stage is
  an image (or a named context). BuildKit builds the target (by default the last stage) and what it
  depends on, nothing else.
"""

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from servicebuild.dockerfile.syntax import (
    DockerfileError,
    Instruction,
    Unresolved,
    expand,
    is_heredoc_marker,
    parse_instructions,
    split_words,
)

PLATFORM_ARGS: Mapping[str, str] = {
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
}
"""The automatic ARGs BuildKit defines in the global scope; a build argument of the same name wins."""


@dataclass(frozen=True)
class Copy:
    """A `COPY` or `ADD`: its sources (as written, variables expanded) and where they land."""

    instruction: Instruction
    sources: tuple[str, ...]
    destination: str
    """Absolute: resolved against the WORKDIR in force (or `/` when the base image's is unknown)."""
    from_ref: str | None
    """The `--from` value (expanded), or None for a copy from the build context."""
    from_stage: int | None
    """The index of the stage `--from` names, or None (the context, or an image)."""
    excludes: tuple[str, ...] = ()
    """`--exclude` patterns (dockerfile 1.7+), relative to the sources."""

    @property
    def from_context(self) -> bool:
        return self.from_ref is None


@dataclass(frozen=True)
class Run:
    instruction: Instruction
    script: str
    """The command as the shell gets it: the shell form's text, the exec form's words, heredoc bodies."""
    workdir: str
    mount_stages: tuple[int, ...]


@dataclass
class Stage:
    """One `FROM` and what follows it up to the next."""

    index: int
    name: str | None
    base: str
    """The base as written after `FROM`."""
    line: int
    image: str | None = None
    """The base image with ARGs substituted; None when the base is another stage or unresolvable."""
    base_stage: int | None = None
    instructions: list[Instruction] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    workdir: str = "/"
    """The WORKDIR at the end of the stage."""
    workdir_set: bool = False
    """Whether this stage or a stage it starts from set WORKDIR (else the base image's is unknown)."""
    user: str | None = None
    """The last USER (inherited through `FROM <stage>`), expanded; None when none was set."""
    user_line: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    dependencies: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        """The stage as BuildKit's progress output names it: its name, or `stage-<index>`."""
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    escape: str = "\\"

    def find(self, reference: str) -> Stage | None:
        """The stage a `--from` value or `FROM` base names (case-insensitive), or with that index."""
        lowered = reference.lower()
        for stage in self.stages:
            if stage.name == lowered:
                return stage
        if reference.isdigit() and int(reference) < len(self.stages):
            return self.stages[int(reference)]
        return None

    def target(self, name: str | None) -> Stage:
        if name is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == name.lower():
                return stage
        raise DockerfileError(f"target stage {name!r} could not be found")

    def reachable(self, target: Stage) -> list[Stage]:
        """The target and every stage it depends on, in Dockerfile order."""
        seen = {target.index}
        pending = [target.index]
        while pending:
            for dependency in self.stages[pending.pop()].dependencies:
                if dependency not in seen:
                    seen.add(dependency)
                    pending.append(dependency)
        return [stage for stage in self.stages if stage.index in seen]

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it starts `FROM`, nearest first."""
        chain = [stage]
        while chain[-1].base_stage is not None and self.stages[chain[-1].base_stage] not in chain:
            chain.append(self.stages[chain[-1].base_stage])
        return chain


def parse_dockerfile(text: str, build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """The stages of a Dockerfile; DockerfileError where BuildKit would refuse it."""
    build_args = dict(build_args or {})
    parsed = parse_instructions(text)
    global_args: dict[str, str] = {
        name: build_args.get(name, default) for name, default in PLATFORM_ARGS.items()
    }
    declared_globals: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instruction in parsed.instructions:
        if instruction.keyword == "from":
            stages.append(_new_stage(instruction, len(stages), global_args))
        elif not stages:
            if instruction.keyword == "arg":
                for name, default in _arg_pairs(instruction, global_args):
                    declared_globals[name] = default
                    value = build_args.get(name, default)
                    if value is not None:
                        global_args[name] = value
            # Other instructions before FROM are errors for BuildKit; nothing to analyse in them.
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise DockerfileError("no build stage in Dockerfile")
    dockerfile = Dockerfile(tuple(stages), parsed.escape)
    for stage in stages:
        _resolve_base(dockerfile, stage, global_args)
    walker = _Walker(dockerfile, build_args, declared_globals, global_args)
    for stage in stages:
        walker.walk(stage)
    return dockerfile


def _new_stage(instruction: Instruction, index: int, global_args: Mapping[str, str]) -> Stage:
    words = instruction.words
    if len(words) not in {1, 3} or (len(words) == 3 and words[1].lower() != "as"):
        raise DockerfileError("FROM requires either one or three arguments", instruction.line)
    name = None
    if len(words) == 3:
        try:
            name = expand(words[2], global_args).lower()
        except Unresolved:
            name = words[2].lower()
    return Stage(index=index, name=name, base=words[0], line=instruction.line)


def _resolve_base(dockerfile: Dockerfile, stage: Stage, global_args: Mapping[str, str]) -> None:
    try:
        base = expand(stage.base, global_args, escape=dockerfile.escape)
    except Unresolved:
        return
    if not base:
        raise DockerfileError(f"base name ({stage.base}) should not be blank", stage.line)
    parent = dockerfile.find(base) if not base.isdigit() else None
    if parent is not None and parent.index != stage.index:
        stage.base_stage = parent.index
        stage.dependencies.add(parent.index)
    else:
        stage.image = base


def _arg_pairs(instruction: Instruction, variables: Mapping[str, str]) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for word in split_words(instruction.text, raw=True):
        name, sep, value = word.partition("=")
        try:
            pairs.append((name, expand(value, variables) if sep else None))
        except Unresolved:
            pairs.append((name, None))
    return pairs


@dataclass
class _Walker:
    """Fills in each stage's WORKDIR, USER, ENV, copies, runs and dependencies, parents first."""

    dockerfile: Dockerfile
    build_args: Mapping[str, str]
    declared_globals: Mapping[str, str | None]
    global_args: Mapping[str, str]
    done: set[int] = field(default_factory=set)

    def walk(self, stage: Stage) -> None:
        if stage.index in self.done:
            return
        self.done.add(stage.index)
        if stage.base_stage is not None:
            parent = self.dockerfile.stages[stage.base_stage]
            self.walk(parent)
            stage.workdir, stage.workdir_set = parent.workdir, parent.workdir_set
            stage.user, stage.user_line = parent.user, parent.user_line
            stage.env = dict(parent.env)
        args: dict[str, str] = {}
        for instruction in stage.instructions:
            variables = {**args, **stage.env}
            if instruction.keyword == "arg":
                args.update(self._stage_args(instruction, variables))
            else:
                self._apply(stage, instruction, variables)

    def _stage_args(self, instruction: Instruction, variables: Mapping[str, str]) -> dict[str, str]:
        args = {}
        for name, default in _arg_pairs(instruction, variables):
            value = self.build_args.get(name, default)
            if value is None and name in self.declared_globals:
                value = self.global_args.get(name)
            if value is not None:
                args[name] = value
        return args

    def _apply(self, stage: Stage, instruction: Instruction, variables: Mapping[str, str]) -> None:
        escape = self.dockerfile.escape
        keyword = instruction.keyword
        if keyword == "env":
            stage.env.update(_env_pairs(instruction, variables, escape))
        elif keyword == "workdir":
            path = _expanded(instruction.text, variables, escape)
            stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, path))
            stage.workdir_set = True
        elif keyword == "user":
            stage.user = _expanded(instruction.text, variables, escape)
            stage.user_line = instruction.line
        elif keyword in {"copy", "add"}:
            copy = _copy(self.dockerfile, stage, instruction, variables)
            if copy is not None:
                stage.copies.append(copy)
                if copy.from_stage is not None:
                    stage.dependencies.add(copy.from_stage)
        elif keyword == "run":
            run = _run(self.dockerfile, stage, instruction, variables)
            stage.runs.append(run)
            stage.dependencies.update(run.mount_stages)


def _expanded(word: str, variables: Mapping[str, str], escape: str) -> str:
    try:
        return expand(word, variables, escape=escape)
    except Unresolved:
        return word


def _env_pairs(instruction: Instruction, variables: Mapping[str, str], escape: str) -> dict[str, str]:
    words = split_words(instruction.text, raw=True, escape=escape)
    if words and "=" not in words[0]:
        # The legacy form `ENV NAME value with spaces`.
        _, _, rest = instruction.text.partition(words[0])
        return {words[0]: _expanded(rest.strip(), variables, escape)}
    pairs: dict[str, str] = {}
    for word in words:
        name, _, value = word.partition("=")
        pairs[name] = _expanded(value, {**variables, **pairs}, escape)
    return pairs


def _copy(
    dockerfile: Dockerfile, stage: Stage, instruction: Instruction, variables: Mapping[str, str]
) -> Copy | None:
    words = instruction.words
    if len(words) < 2:
        return None
    sources = [
        _expanded(word, variables, dockerfile.escape)
        for word in words[:-1]
        if not (instruction.heredocs and is_heredoc_marker(word))
    ]
    destination = _expanded(words[-1], variables, dockerfile.escape)
    from_ref = instruction.flag("from")
    from_stage = None
    if from_ref is not None:
        from_ref = _expanded(from_ref, variables, dockerfile.escape)
        found = dockerfile.find(from_ref)
        from_stage = found.index if found is not None and found.index != stage.index else None
    target = posixpath.join(stage.workdir, destination)
    resolved = posixpath.normpath(target)
    if destination.endswith("/") or destination in {".", "./"}:
        resolved = resolved.rstrip("/") + "/" if resolved != "/" else "/"
    return Copy(
        instruction=instruction,
        sources=tuple(sources),
        destination=resolved,
        from_ref=from_ref,
        from_stage=from_stage,
        excludes=tuple(instruction.flag_values("exclude")),
    )


def _run(dockerfile: Dockerfile, stage: Stage, instruction: Instruction, variables: Mapping[str, str]) -> Run:
    if instruction.json_args is not None:
        script = " ".join(instruction.json_args)
    else:
        script = "\n".join([instruction.text, *(heredoc.content for heredoc in instruction.heredocs)])
    mount_stages = []
    for mount in instruction.flag_values("mount"):
        options = dict(option.partition("=")[::2] for option in mount.split(","))
        source = options.get("from")
        if source:
            found = dockerfile.find(_expanded(source, variables, dockerfile.escape))
            if found is not None and found.index != stage.index:
                mount_stages.append(found.index)
    return Run(
        instruction=instruction, script=script, workdir=stage.workdir, mount_stages=tuple(mount_stages)
    )
