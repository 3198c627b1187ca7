"""`kubectl_complete-servicebuild`: completion through kubectl. kubectl 1.26 and later runs it with the
words after `kubectl servicebuild` when completing `kubectl servicebuild …` and reads one candidate a
line, then cobra's `:<directive>` line."""

import sys

import click
from click.shell_completion import ShellComplete

from servicebuild.cli.main import COMPLETE_VAR, PROG, cli

NO_FILE_COMPLETION = 4
"""cobra's ShellCompDirectiveNoFileComp: the shell offers no file names in their place."""


def kubectl_candidates(words: list[str]) -> list[str]:
    """What kubectl shows for `kubectl servicebuild <words>`; the last word is the one being typed."""
    *done, incomplete = words or [""]
    items = ShellComplete(cli, {}, PROG, COMPLETE_VAR).get_completions(done, incomplete)
    return [f"{item.value}\t{item.help}" if item.help else str(item.value) for item in items]


def kubectl_complete() -> None:
    """The `kubectl_complete-servicebuild` console script."""
    for candidate in kubectl_candidates(sys.argv[1:]):
        click.echo(candidate)
    click.echo(f":{NO_FILE_COMPLETION}")
