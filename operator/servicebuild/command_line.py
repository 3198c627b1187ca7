"""The command line: `--help` lists the settings, `--version` prints the version, a bad setting is one line
naming its variable, exit 2.

Everything here is derived from `config.Settings` (its fields, defaults and docstrings), so the help
cannot drift from what the operator reads. Nothing here talks to Kubernetes: the entry point calls
`settings_from_command_line` first and only then connects.
"""

import argparse
import json
import os
import re
import textwrap
from collections.abc import Mapping, Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError

from servicebuild import __version__
from servicebuild.config import Settings

PROG = "servicebuild-operator"
EXIT_BAD_SETTINGS = 2  # what argparse uses for a bad command line
_HELP_WIDTH = 100
_DESCRIPTION = (
    "Run the ServiceBuild operator: it watches ServiceBuilds and builds their images with rootless "
    "BuildKit in Jobs, against the in-cluster service account or else the current kubeconfig "
    "(KUBECONFIG, ~/.kube/config). It takes no arguments; the settings are environment variables."
)
# pydantic-settings names the field only in the message of the error it raises when it cannot decode
# a JSON value (sources/base.py: `error parsing value for field "…" from source "…"`).
_SETTINGS_ERROR_FIELD = re.compile(r'field "(?P<field>[^"]+)"')


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def one_line(text: str) -> str:
    """Whitespace, newlines included, collapsed to single spaces."""
    return " ".join(text.split())


def env_default(value: object) -> str:
    """A default as it would be written in the environment, or how its absence reads."""
    if value is None:
        return "unset"
    match value:
        case bool():
            text = str(value).lower()
        case float():
            text = f"{value:g}"
        case frozenset() | set():
            text = ",".join(sorted(map(str, value)))
        case dict():
            text = json.dumps({key: sorted(hosts) for key, hosts in value.items()}) if value else ""
        case _:
            text = str(value)
    return text or "empty"


def settings_help() -> str:
    """Every setting: its variable, its default and its docstring."""
    lines = ["settings (environment variables, read once at start-up):"]
    for name, field in Settings.model_fields.items():
        default = env_default(field.get_default(call_default_factory=True))
        lines.append(f"  {env_name(name)}  (default: {default})")
        lines.extend(
            textwrap.wrap(
                one_line(field.description or ""),
                width=_HELP_WIDTH,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    command_line = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(_DESCRIPTION, width=_HELP_WIDTH),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command_line.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return command_line


def setting_error_line(variable: str, value: str | None, problem: str, description: str | None) -> str:
    """One line: the variable (with the value it has), what is wrong, and what the setting takes."""
    subject = variable if value is None else f"{variable}={value!r}"
    line = f"{subject}: {one_line(problem)}"
    return f"{line} — {one_line(description)}" if description else line


def _value_of(variable: str, environ: Mapping[str, str]) -> str | None:
    """The variable's value as pydantic-settings reads it: names are case-insensitive."""
    matches = [value for name, value in environ.items() if name.lower() == variable.lower()]
    return matches[-1] if matches else None


def _line_for(field: str, problem: str, environ: Mapping[str, str]) -> str:
    info = Settings.model_fields.get(field)
    variable = env_name(field)
    description = info.description if info else None
    return setting_error_line(variable, _value_of(variable, environ), problem, description)


def _validation_problem(error: ErrorDetails) -> str:
    message = error["msg"].removeprefix("Value error, ")  # a validator's own ValueError
    inner = ".".join(str(part) for part in error["loc"][1:])
    return f"at {inner}: {message}" if inner else message


def setting_error_lines(error: ValidationError | SettingsError, environ: Mapping[str, str]) -> list[str]:
    """What `Settings()` raised, as one line per bad setting."""
    if isinstance(error, ValidationError):
        return [
            _line_for(str(details["loc"][0]), _validation_problem(details), environ)
            if details["loc"]
            else one_line(details["msg"].removeprefix("Value error, "))
            for details in error.errors(include_url=False)
        ]
    found = _SETTINGS_ERROR_FIELD.search(str(error))
    cause = error.__cause__
    if found is None:
        return [one_line(f"{error}: {cause}" if cause else str(error))]
    problem = f"not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else str(cause or error)
    return [_line_for(found["field"], problem, environ)]


def settings_from_command_line(argv: Sequence[str] | None = None) -> Settings:
    """The settings, after `--help` and `--version` were answered; a bad command line or setting exits 2
    with one line per problem."""
    command_line = parser()
    command_line.parse_args(argv)
    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        lines = setting_error_lines(error, os.environ)
        command_line.exit(EXIT_BAD_SETTINGS, "".join(f"{command_line.prog}: {line}\n" for line in lines))
