"""What a RUN step does and what a base image is, recognised from their words; pure tables.

A RUN script is split into simple commands at `&&`, `||`, `;`, `|`, `&`, parentheses and line ends
(heredoc bodies included); leading `VAR=value` assignments and wrappers (`sudo`, `env`, `exec`, `time`)
are skipped, and `cd DIR` moves the directory the later commands of the same script run in.
"""

import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

_WRAPPERS = frozenset({"sudo", "env", "exec", "time", "nice", "command", "nohup"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"})


@dataclass(frozen=True)
class Command:
    """One simple command of a RUN script and the directory it runs in."""

    words: tuple[str, ...]
    cwd: str

    @property
    def program(self) -> str:
        return posixpath.basename(self.words[0]) if self.words else ""

    def has(self, *words: str) -> bool:
        return any(word in self.words[1:] for word in words)


def commands(script: str, workdir: str) -> list[Command]:
    """The simple commands of a RUN script, each with the directory it runs in."""
    found = []
    cwd = workdir
    for line in script.replace("\\\n", " ").split("\n"):
        for words in _simple_commands(line):
            if words[0] == "cd" and len(words) > 1:
                cwd = posixpath.normpath(posixpath.join(cwd, words[1]))
                continue
            found.append(Command(tuple(words), cwd))
    return found


def _simple_commands(line: str) -> Iterator[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: fall back to plain words
        tokens = re.split(r"\s+|(&&|\|\||;|\|)", line)
        tokens = [token for token in tokens if token]
    words: list[str] = []
    for token in [*tokens, ";"]:
        if token in _SEPARATORS:
            while words and (_ASSIGNMENT.match(words[0]) or words[0] in _WRAPPERS):
                words.pop(0)
            if words:
                yield words
            words = []
        else:
            words.append(token)


@dataclass(frozen=True)
class Install:
    """A dependency install and the manifest files it reads, relative to the directory it runs in."""

    tool: str
    """How the message names the step (`npm ci`, `pip install -r requirements.txt`)."""
    primary: tuple[str, ...]
    """Files of which at least one must be in the context for the step to read them."""
    optional: tuple[str, ...] = ()
    """Lock and config files to copy with them when the context has them."""


_JS_LOCKS = {
    "npm": ("package-lock.json", "npm-shrinkwrap.json"),
    "yarn": ("yarn.lock", ".yarnrc.yml"),
    "pnpm": ("pnpm-lock.yaml", "pnpm-workspace.yaml"),
}


def install_of(command: Command) -> Install | None:  # noqa: C901, PLR0911, PLR0912 - one table
    """The dependency install a command performs, or None."""
    program, rest = command.program, command.words[1:]
    global_install = command.has("-g", "--global") or "global" in rest[:1]
    if program == "npm" and rest[:1] in (("ci",), ("install",), ("i",)) and not global_install:
        return Install(f"npm {rest[0]}", ("package.json",), _JS_LOCKS["npm"])
    if (
        program == "yarn"
        and (not rest or rest[0] == "install" or rest[0].startswith("-"))
        and not global_install
    ):
        return Install("yarn install", ("package.json",), _JS_LOCKS["yarn"])
    if program == "pnpm" and rest[:1] in (("install",), ("i",), ("fetch",)) and not global_install:
        return Install(f"pnpm {rest[0]}", ("package.json",), _JS_LOCKS["pnpm"])
    if program in {"pip", "pip3"} or (program.startswith("python") and rest[:2] == ("-m", "pip")):
        requirements = _requirement_files(rest)
        if "install" in rest and requirements:
            return Install(f"pip install -r {' '.join(requirements)}", requirements)
    if program == "uv" and rest[:2] == ("pip", "install"):
        requirements = _requirement_files(rest)
        if requirements:
            return Install(f"uv pip install -r {' '.join(requirements)}", requirements)
    if program == "uv" and rest[:1] == ("sync",):
        return Install("uv sync", ("pyproject.toml",), ("uv.lock",))
    if program == "poetry" and rest[:1] == ("install",):
        return Install("poetry install", ("pyproject.toml",), ("poetry.lock", "poetry.toml"))
    if program == "go" and rest[:2] == ("mod", "download"):
        return Install("go mod download", ("go.mod",), ("go.sum",))
    if program in {"mvn", "mvnw"} and any(
        word.endswith(("dependency:go-offline", "dependency:resolve")) for word in rest
    ):
        return Install("mvn dependency:go-offline", ("pom.xml",))
    if program == "cargo" and rest[:1] in (("fetch",), ("build",)):
        return Install(f"cargo {rest[0]}", ("Cargo.toml",), ("Cargo.lock",))
    if program == "bundle" and rest[:1] == ("install",):
        return Install("bundle install", ("Gemfile",), ("Gemfile.lock",))
    if program == "composer" and rest[:1] == ("install",):
        return Install("composer install", ("composer.json",), ("composer.lock",))
    return None


def _requirement_files(words: tuple[str, ...]) -> tuple[str, ...]:
    files = []
    for index, word in enumerate(words):
        if word in {"-r", "--requirement"} and index + 1 < len(words):
            files.append(words[index + 1])
        elif word.startswith("--requirement="):
            files.append(word.partition("=")[2])
        elif word.startswith("-r") and len(word) > 2 and not word.startswith("--"):
            files.append(word[2:])
    return tuple(files)


_TEST_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("go", ("test", "vet")),
    ("cargo", ("test",)),
    ("npm", ("test", "t")),
    ("yarn", ("test",)),
    ("pnpm", ("test",)),
    ("dotnet", ("test",)),
    ("make", ("test", "check", "tests")),
    ("gradle", ("test", "check")),
    ("gradlew", ("test", "check")),
    ("mvn", ("test", "verify")),
    ("mvnw", ("test", "verify")),
)
_TEST_PROGRAMS = frozenset({"pytest", "py.test", "tox", "nox", "ctest", "jest", "vitest", "rspec", "phpunit"})
_TEST_FILE = re.compile(
    r"(^|/)(test_[\w-]+\.py|[\w-]+_test\.(c|cc|cpp|go|py|rs)|[\w.-]+\.(test|spec)\.[jt]sx?|\w+Tests?\.java)$"
)


def is_test_command(command: Command) -> bool:
    """Whether a command runs tests: a test runner, a test target, or a test file built and run."""
    program, rest = command.program, command.words[1:]
    if program in _TEST_PROGRAMS:
        return True
    if program.startswith("python") and rest[:2] in (("-m", "pytest"), ("-m", "unittest")):
        return True
    if (
        program in {"npm", "yarn", "pnpm"}
        and rest[:1] == ("run",)
        and rest[1:2]
        and rest[1].startswith("test")
    ):
        return True
    for name, subcommands in _TEST_COMMANDS:
        if program == name and any(word in subcommands for word in rest):
            return True
    return any(_TEST_FILE.search(word) for word in command.words)


def is_test_file(path: str) -> bool:
    return bool(_TEST_FILE.search(path))


_COMPILERS = frozenset({"gcc", "g++", "cc", "c++", "clang", "clang++", "javac", "rustc", "make", "cmake"})


def is_compile_command(command: Command) -> bool:
    """Whether a command compiles natively: a compiler or build tool that only a toolchain image has
    (unlike `npm run build`, whose tools are the runtime's own)."""
    program, rest = command.program, command.words[1:]
    if program in _COMPILERS:
        return True
    if program in {"go", "cargo", "dotnet"} and rest[:1] in (("build",), ("install",), ("publish",)):
        return True
    return program in {"mvn", "mvnw", "gradle", "gradlew"} and command.has(
        "package", "install", "build", "bootJar"
    )


def is_build_command(command: Command) -> bool:
    """Whether a command builds the service: compiles, or runs a JavaScript build."""
    program, rest = command.program, command.words[1:]
    if program in {"npm", "yarn", "pnpm"} and (rest[:2] == ("run", "build") or rest[:1] == ("build",)):
        return True
    return is_compile_command(command)


_PACKAGE_MANAGERS = {"apt-get": "install", "apt": "install", "apk": "add", "yum": "install", "dnf": "install"}


def installs_system_packages(command: Command) -> bool:
    """Whether a command installs OS packages (a toolchain, typically) into the image."""
    verb = _PACKAGE_MANAGERS.get(command.program)
    return verb is not None and verb in command.words[1:]


@dataclass(frozen=True)
class ImageName:
    """An image reference split into the parts the rules look at."""

    reference: str
    registry: str | None
    path: str
    """The repository path without the registry (`library/golang`, `dotnet/sdk`)."""
    tag: str | None
    digest: str | None

    @property
    def official(self) -> str | None:
        """The Docker official image it is (`golang` for `golang`, `docker.io/library/golang` or a
        mirror's `<registry>/library/golang`), else None."""
        if "/" not in self.path:
            return self.path
        parent, _, name = self.path.rpartition("/")
        return name if parent == "library" or parent.endswith("/library") else None


def parse_image_name(reference: str) -> ImageName:
    remainder, _, digest = reference.partition("@")
    tag = None
    last_slash = remainder.rfind("/")
    if ":" in remainder[last_slash + 1 :]:
        remainder, tag = remainder.rsplit(":", 1)
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = None, remainder
    if registry in {"docker.io", "index.docker.io", "registry-1.docker.io"}:
        registry = None
    return ImageName(reference, registry, path.lower(), tag, digest or None)


@dataclass(frozen=True)
class Toolchain:
    what: str
    """How the message describes the image (`the Go toolchain`)."""
    runtime: str
    """A runtime image to suggest instead."""


_RUNTIME_STATIC = "gcr.io/distroless/static-debian12 (or debian:bookworm-slim)"
_TOOLCHAIN_IMAGES = {
    "golang": Toolchain("the Go toolchain", _RUNTIME_STATIC),
    "rust": Toolchain("the Rust toolchain", _RUNTIME_STATIC),
    "gcc": Toolchain("GCC and the C/C++ toolchain", _RUNTIME_STATIC),
    "buildpack-deps": Toolchain("compilers and development headers", "debian:bookworm-slim"),
    "maven": Toolchain("Maven and a full JDK", "eclipse-temurin:<version>-jre"),
    "gradle": Toolchain("Gradle and a full JDK", "eclipse-temurin:<version>-jre"),
    "openjdk": Toolchain("a full JDK", "eclipse-temurin:<version>-jre"),
}
_SLIM_MARKERS = ("slim", "alpine", "distroless")


def toolchain_of(image: ImageName) -> Toolchain | None:
    """The toolchain a known SDK image carries, or None for a runtime or unknown image."""
    tag = (image.tag or "latest").lower()
    official = image.official
    if image.registry == "mcr.microsoft.com" and image.path == "dotnet/sdk":
        return Toolchain("the .NET SDK", "mcr.microsoft.com/dotnet/aspnet (or dotnet/runtime)")
    if official is None:
        return None
    if official in _TOOLCHAIN_IMAGES:
        return _TOOLCHAIN_IMAGES[official]
    if official == "eclipse-temurin" and "jre" not in tag:
        return Toolchain("a full JDK", "eclipse-temurin:<version>-jre")
    if official in {"node", "python"} and not any(marker in tag for marker in _SLIM_MARKERS):
        language = "Node.js" if official == "node" else "Python"
        return Toolchain(f"the full {language} image's compilers and headers", f"{official}:<version>-slim")
    return None
