"""Dockerfile analysis: findings about how a Dockerfile builds its target, from its text, the target,
the build arguments and the build context (file paths, the text of a few small files, the
`.dockerignore`). Pure: no I/O, no clock; `servicebuild.findings` puts its findings in the status.

`analyze` is the entry point; `parse_dockerfile` (the target stage's instructions, for the image's
layers) and `copied_context_files` (what a missed `COPY` step copies) serve the other readers of a
Dockerfile, so that there is one. `syntax` reads instructions as BuildKit's parser does and expands
words as its lexer does; `stages` builds the stage graph a target reaches; `ignore` matches
`.dockerignore` as moby/patternmatcher does; `commands` recognises RUN steps and base images; `rules`
holds the rules. The parser and the matcher are hand-written: their module docstrings say which
libraries were tried on which hard cases and why none was taken.
"""

from servicebuild.dockerfile.rules import (
    MAX_FINDINGS,
    BuildContext,
    Finding,
    Rule,
    Severity,
    analyze,
    copied_context_files,
)
from servicebuild.dockerfile.stages import parse_dockerfile
from servicebuild.dockerfile.syntax import DockerfileError

RULE_NAMES = frozenset(rule.value for rule in Rule)
"""The operator's own rules, as findings name them; BuildKit's build checks are others."""

__all__ = [
    "MAX_FINDINGS",
    "RULE_NAMES",
    "BuildContext",
    "DockerfileError",
    "Finding",
    "Rule",
    "Severity",
    "analyze",
    "copied_context_files",
    "parse_dockerfile",
]
