"""Why the cache missed: what changed since the last successful build under the first missed step; pure.

BuildKit names the first missed step (`cachemetrics`, `report_budget`) but not why. The operator keeps
short digests of what each successful build read (`CacheInputs`: the ConfigMap context's files, the
build arguments) and compares them with the next build's: the changed files that the missed `COPY` or
`ADD` copies (its sources matched as BuildKit matches them, `*`/`?` wildcards and folders), the build
arguments whose value changed, the base images whose digest changed. The Dockerfile analysis's parser and
source matching read the step (`dockerfile.copied_context_files`). A file BuildKit skips by
`.dockerignore` may be named though it changed nothing; git sources have no file digests.
"""

import hashlib
from collections.abc import Iterable, Mapping

from servicebuild.api.models import BaseImage, CacheInputs, FirstMiss
from servicebuild.buildcontext import file_digests
from servicebuild.buildlog import parse_step_name
from servicebuild.dockerfile import copied_context_files

MAX_TRACKED_FILES = 100
"""A context of more files keeps no file digests: the status stays small."""
MAX_NAMED = 5


def cache_inputs(files: Mapping[str, bytes] | None, build_args: Mapping[str, str]) -> CacheInputs:
    """The digests to keep for the next build to compare with."""
    tracked = file_digests(files) if files is not None and len(files) <= MAX_TRACKED_FILES else None
    args = {
        name: hashlib.sha256(value.encode()).hexdigest()[:16] for name, value in sorted(build_args.items())
    }
    return CacheInputs(files=tracked or None, build_args=args or None)


def explain(
    step: str,
    previous: CacheInputs | None,
    current: CacheInputs,
    previous_bases: Iterable[BaseImage],
    current_bases: Iterable[BaseImage],
) -> FirstMiss:
    """The first missed `step` with what changed since the build `previous` describes."""
    if previous is None:
        return FirstMiss(step=step)
    files = _changed(previous.files, current.files) if previous.files and current.files else []
    parsed = parse_step_name(step)
    copied = sorted(copied_context_files(parsed.instruction if parsed else step, files) or [])
    args = _changed(previous.build_args or {}, current.build_args or {})
    before = {image.ref: image.digest for image in previous_bases}
    bases = sorted(
        {image.ref for image in current_bases if before.get(image.ref, image.digest) != image.digest}
    )
    return FirstMiss(
        step=step,
        changed_files=copied[:MAX_NAMED] or None,
        changed_build_args=args[:MAX_NAMED] or None,
        changed_base_images=bases[:MAX_NAMED] or None,
    )


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names added, removed or with another digest, sorted."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
