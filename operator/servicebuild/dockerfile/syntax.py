"""A Dockerfile's instructions, read the way BuildKit's parser reads them, and its shell-word expansion.

This follows `frontend/dockerfile/parser` of moby/buildkit (`parser.go`, `split_command.go`,
`line_parsers.go`) and the word expansion of `frontend/dockerfile/shell/lex.go`:

- parser directives (`# escape=`, `# syntax=`) only before the first instruction or other comment;
- a line ending in the escape character (`\\` or the `# escape=` one) continues; comment lines and empty
  lines inside a continuation are dropped; the instruction keeps the line it started on;
- flags are the leading `--name[=value]` words (quotes and escapes as BuildKit's `extractBuilderFlags`);
- `RUN`, `COPY` and `ADD` in shell form take heredocs: each word `[n]<<[-]NAME` reads the lines after the
  instruction up to the terminator `NAME` (leading tabs dropped for `<<-`); a quoted name turns off
  expansion;
- JSON (exec) form when the arguments are a JSON array of strings;
- `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?word}` and
  `${VAR?word}` with single and double quotes and the escape character. The pattern forms
  (`${VAR#…}`, `${VAR%…}`, `${VAR/…}`) raise `Unresolved`: the analysis then treats the word as unknown
  rather than guessing.

Why not a library (evaluated against these hard cases): `dockerfile` (asottile) wraps BuildKit's own Go
parser and reads every case right, but ships wheels for x86_64 glibc only (none for aarch64 or musl,
whose sdist needs a Go toolchain), pins BuildKit v0.12.5, and substitutes no ARGs; `dockerfile-parse`
is pure Python but reads heredoc bodies as instructions, cuts a continuation at a blank line,
mis-expands `${BASE:-scratch}`, and parses no flags. The parts BuildKit needs here are about 300 lines.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})
_JSON_INSTRUCTIONS = frozenset({"run", "cmd", "entrypoint", "shell", "add", "copy", "volume"})
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]*")


class DockerfileError(ValueError):
    """A Dockerfile BuildKit would reject before building anything; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class Unresolved(ValueError):  # noqa: N818 - it is a state of a word, not a failure of the program
    """A word whose expansion the analysis does not model (a pattern substitution, `${VAR:?}` unset)."""


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool
    """False when the name was quoted (`<<'EOF'`): the content is taken literally."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword in lower case, its flags, and its arguments."""

    keyword: str
    flags: tuple[str, ...]
    """`--name=value` (or `--name`) words as written before the arguments, quotes removed."""
    text: str
    """The arguments after the flags, as one line (continuations joined, comment lines dropped)."""
    json_args: tuple[str, ...] | None
    """The arguments of the exec (JSON) form, or None for the shell form."""
    heredocs: tuple[Heredoc, ...]
    line: int
    """The line the instruction starts on, 1-based."""
    end_line: int
    original: str
    """The instruction as one line: keyword, flags and arguments."""

    def flag(self, name: str) -> str | None:
        """The value of the last `--name=value` flag, `""` for a bare `--name`, None when absent."""
        found = None
        for flag in self.flags:
            key, sep, value = flag[2:].partition("=")
            if key.lower() == name:
                found = value if sep else ""
        return found

    def flag_values(self, name: str) -> list[str]:
        """Every value of a repeatable flag (`--mount`, `--exclude`), in order."""
        values = []
        for flag in self.flags:
            key, sep, value = flag[2:].partition("=")
            if key.lower() == name and sep:
                values.append(value)
        return values

    @property
    def words(self) -> tuple[str, ...]:
        """The arguments split on whitespace (shell form) or the JSON list, as BuildKit's line parsers do."""
        if self.json_args is not None:
            return self.json_args
        return tuple(self.text.split())


@dataclass(frozen=True)
class Parsed:
    instructions: tuple[Instruction, ...]
    escape: str
    """The escape character: `\\`, or what a `# escape=` directive chose."""


def is_heredoc_marker(word: str) -> bool:
    """Whether an argument word of RUN, COPY or ADD is a heredoc marker (`<<EOF`, `<<-'EOT'`, `3<<X`)."""
    match = _HEREDOC_RE.match(word)
    return bool(match and match.group(3))


class _Directives:
    """Parser directives: only on the lines before the first instruction, comment or blank line."""

    def __init__(self) -> None:
        self.escape = "\\"
        self._done = False
        self._seen: set[str] = set()

    def see(self, line: str, number: int) -> None:
        if self._done:
            return
        match = _DIRECTIVE_RE.match(line)
        name = match.group(1).lower() if match else ""
        if not match or name not in {"escape", "syntax", "check"}:
            self._done = True
            return
        if name in self._seen:
            raise DockerfileError(f"only one {name} parser directive can be used", number)
        self._seen.add(name)
        if name == "escape":
            if match.group(2) not in {"\\", "`"}:
                raise DockerfileError(f"invalid escape token {match.group(2)!r}", number)
            self.escape = match.group(2)


def parse_instructions(text: str) -> Parsed:
    """Every instruction of a Dockerfile, in order; DockerfileError for what BuildKit refuses to parse."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    directives = _Directives()
    instructions: list[Instruction] = []
    index = 0
    while index < len(lines):
        stripped = lines[index].rstrip("\r").lstrip()
        index += 1
        start = index
        directives.see(stripped, start)
        line, ended = _trim_continuation("" if stripped.startswith("#") else stripped, directives.escape)
        while not ended and index < len(lines):
            raw = lines[index].rstrip("\r")
            index += 1
            if not raw.lstrip().startswith("#") and raw.strip():
                more, ended = _trim_continuation(raw, directives.escape)
                line += more
        if not line.strip():
            continue
        instruction, index = _instruction(line, start, index, lines)
        instructions.append(instruction)
    if not instructions:
        raise DockerfileError("file with no instructions")
    return Parsed(tuple(instructions), directives.escape)


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    # BuildKit: `([^E])E[ \t]*$|^E[ \t]*$` — an escape character that ends the line, unless itself escaped.
    body = line.rstrip(" \t")
    if body.endswith(escape) and (len(body) == 1 or body[-2] != escape):
        return body[:-1], False
    return line, True


def _instruction(line: str, start: int, index: int, lines: list[str]) -> tuple[Instruction, int]:
    parts = line.strip().split(maxsplit=1)
    keyword = parts[0].lower()
    rest, flags = _split_flags(parts[1]) if len(parts) > 1 else ("", [])
    rest = rest.strip()
    json_args = _json_args(rest) if keyword in _JSON_INSTRUCTIONS else None
    heredocs: list[Heredoc] = []
    if keyword in HEREDOC_INSTRUCTIONS and json_args is None:
        for word in split_words(line, raw=True):
            heredoc = _heredoc_word(word)
            if heredoc is None:
                continue
            name, chomp, expand = heredoc
            content: list[str] = []
            while True:
                if index >= len(lines):
                    raise DockerfileError("unterminated heredoc", start)
                body = lines[index]
                index += 1
                candidate = body.rstrip("\r")
                if (candidate.lstrip("\t") if chomp else candidate) == name:
                    break
                content.append(body.lstrip("\t") if chomp else body)
            heredocs.append(Heredoc(name, "".join(f"{part}\n" for part in content), expand))
    instruction = Instruction(
        keyword=keyword,
        flags=tuple(flags),
        text=rest,
        json_args=json_args,
        heredocs=tuple(heredocs),
        line=start,
        end_line=index,
        original=line.strip(),
    )
    return instruction, index


def _json_args(rest: str) -> tuple[str, ...] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _heredoc_word(word: str) -> tuple[str, bool, bool] | None:
    match = _HEREDOC_RE.match(word)
    if not match or not match.group(3):
        return None
    rest = match.group(3)
    words = split_words(rest)
    if len(words) != 1:
        return None
    quoted = any(quote in rest for quote in "'\"")
    return words[0], match.group(2) == "-", not quoted


def _split_flags(line: str) -> tuple[str, list[str]]:  # noqa: C901, PLR0912 - a port of Go, kept branch for branch
    """BuildKit's `extractBuilderFlags`: the leading `--…` words, and the rest of the line."""
    flags: list[str] = []
    position = 0
    while True:
        while position < len(line) and line[position].isspace():
            position += 1
        if not line.startswith("--", position):
            return line[position:], flags
        word: list[str] = []
        quote = ""
        while position < len(line):
            char = line[position]
            if quote:
                if char == quote:
                    quote = ""
                elif char == "\\" and position + 1 < len(line):
                    position += 1
                    word.append(line[position])
                else:
                    word.append(char)
            elif char.isspace():
                break
            elif char in "'\"":
                quote = char
            elif char == "\\":
                if position + 1 < len(line):
                    position += 1
                    word.append(line[position])
            else:
                word.append(char)
            position += 1
        flag = "".join(word)
        if flag == "--":
            return line[position:], flags
        flags.append(flag)


def split_words(text: str, *, raw: bool = False, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace like BuildKit's lexer; `raw` keeps quotes and escapes as written.

    Variables are left as written: this is for finding words (heredoc markers, ENV and ARG pairs).
    """
    words: list[str] = []
    word: list[str] = []
    in_word = False
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            position += 1
            continue
        in_word = True
        if char == escape and position + 1 < len(text):
            word.append(text[position : position + 2] if raw else text[position + 1])
            position += 2
            continue
        if char in "'\"":
            end = _closing_quote(text, position, escape)
            inner = text[position + 1 : end]
            if raw:
                word.append(text[position : end + 1])
            elif char == '"':
                word.append(re.sub(rf"{re.escape(escape)}([\"{re.escape(escape)}$])", r"\1", inner))
            else:
                word.append(inner)
            position = end + 1
            continue
        word.append(char)
        position += 1
    if in_word:
        words.append("".join(word))
    return words


def _closing_quote(text: str, start: int, escape: str) -> int:
    quote = text[start]
    position = start + 1
    while position < len(text):
        if quote == '"' and text[position] == escape:
            position += 2
            continue
        if text[position] == quote:
            return position
        position += 1
    return len(text)


def expand(word: str, variables: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word with `$VAR` references replaced and quotes removed, as BuildKit's `ProcessWord` does.

    An unset variable expands to nothing, as in BuildKit. Raises Unresolved for the forms not modelled.
    """
    result, _ = _expand(word, 0, variables, escape, stop="")
    return result


def _expand(  # noqa: C901 - a port of BuildKit's lexer, kept branch for branch
    word: str, position: int, variables: Mapping[str, str], escape: str, stop: str
) -> tuple[str, int]:
    out: list[str] = []
    while position < len(word):
        char = word[position]
        if stop and char == stop:
            return "".join(out), position
        if char == escape:
            if position + 1 < len(word):
                out.append(word[position + 1])
            position += 2
        elif char == "'":
            end = word.find("'", position + 1)
            end = len(word) if end < 0 else end
            out.append(word[position + 1 : end])
            position = end + 1
        elif char == '"':
            position += 1
            while position < len(word) and word[position] != '"':
                if (
                    word[position] == escape
                    and position + 1 < len(word)
                    and word[position + 1] in f'"$`{escape}'
                ):
                    out.append(word[position + 1])
                    position += 2
                elif word[position] == "$":
                    value, position = _dollar(word, position, variables, escape)
                    out.append(value)
                else:
                    out.append(word[position])
                    position += 1
            position += 1
        elif char == "$":
            value, position = _dollar(word, position, variables, escape)
            out.append(value)
        else:
            out.append(char)
            position += 1
    return "".join(out), position


def _dollar(  # noqa: C901, PLR0911 - a port of BuildKit's `processDollar`
    word: str, position: int, variables: Mapping[str, str], escape: str
) -> tuple[str, int]:
    position += 1
    if position >= len(word):
        return "$", position
    if word[position] != "{":
        name_match = _NAME_CHARS.match(word, position) if _NAME_START.match(word, position) else None
        if not name_match:
            return "$", position
        return variables.get(name_match.group(), ""), name_match.end()
    position += 1
    name_match = _NAME_CHARS.match(word, position)
    name = name_match.group() if name_match else ""
    position += len(name)
    if not name or position >= len(word):
        raise Unresolved(word)
    operator = word[position]
    if operator == "}":
        return variables.get(name, ""), position + 1
    colon = operator == ":"
    if colon:
        position += 1
        operator = word[position] if position < len(word) else ""
    if operator not in {"-", "+", "?"}:
        raise Unresolved(word)
    argument, position = _expand(word, position + 1, variables, escape, stop="}")
    if position >= len(word):
        raise Unresolved(word)
    value = variables.get(name)
    present = value is not None and (value != "" or not colon)
    if operator == "-":
        return (value or "") if present else argument, position + 1
    if operator == "+":
        return argument if present else "", position + 1
    if not present:
        raise Unresolved(word)
    return value or "", position + 1
