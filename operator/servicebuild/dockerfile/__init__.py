"""Dockerfile analysis: findings about how a Dockerfile builds its target, from its text, the build
arguments and the build context's file list. Pure: no I/O, no clock.

`analyze` is the entry point; `syntax` reads instructions as BuildKit does, `stages` builds the stage
graph, `ignore` matches `.dockerignore`, `commands` recognises RUN steps and images, `rules` holds the
rules.
"""

from servicebuild.dockerfile.rules import MAX_FINDINGS, BuildContext, Finding, Rule, Severity, analyze
from servicebuild.dockerfile.syntax import DockerfileError

__all__ = ["MAX_FINDINGS", "BuildContext", "DockerfileError", "Finding", "Rule", "Severity", "analyze"]
