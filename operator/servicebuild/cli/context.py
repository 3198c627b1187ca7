"""A folder packed as the build context the operator unpacks: one `.tar.gz` under one `binaryData` key
of a ConfigMap (docs/servicebuild.md#contexts-with-folders), honouring `.dockerignore` as BuildKit
does (`servicebuild.dockerfile.ignore`).

The archive is reproducible: the same files give the same bytes (sorted members, no times, owners or
gzip timestamp), so packing an unchanged folder again changes nothing and starts no build.
"""

import gzip
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from servicebuild.dockerfile.ignore import IgnoreMatcher, read_patterns
from servicebuild.status import human_size

ARCHIVE_KEY = "context.tar.gz"
MAX_ARCHIVE_BYTES = 1024 * 1024
"""What a ConfigMap's data may hold in all: the API server refuses more."""
LARGEST_SHOWN = 5


class ContextTooLargeError(Exception):
    """The packed context does not fit in a ConfigMap; the message names the largest files."""

    def __init__(self, archive_bytes: int, largest: list[tuple[str, int]]) -> None:
        self.largest = largest
        self.suggestions = list(dict.fromkeys(_ignore_entry(path) for path, _ in largest))
        files = "\n".join(f"  {human_size(size):>10}  {path}" for path, size in largest)
        entries = "\n".join(f"  {entry}" for entry in self.suggestions)
        super().__init__(
            f"the context packs to {human_size(archive_bytes)}, over the {human_size(MAX_ARCHIVE_BYTES)} "
            f"a ConfigMap holds. Largest files:\n{files}\n"
            f"If the build does not need them, add to .dockerignore:\n{entries}"
        )


@dataclass(frozen=True)
class PackedContext:
    archive: bytes
    files: tuple[str, ...]
    """The regular files packed, `/`-separated and relative to the folder."""


def selected_paths(folder: Path, dockerfile: str = "Dockerfile") -> list[str]:
    """What the context holds: every path `.dockerignore` keeps, directories included, sorted. The
    Dockerfile and `.dockerignore` are kept whatever `.dockerignore` says, as docker keeps them (BuildKit
    reads both)."""
    ignore_file = folder / ".dockerignore"
    patterns = read_patterns(ignore_file.read_text()) if ignore_file.is_file() else []
    matcher = IgnoreMatcher([*patterns, f"!{PurePosixPath(dockerfile)}", "!.dockerignore"])
    # A directory may be skipped whole only when no `!` pattern can take a path below it back.
    may_prune = not any(pattern.startswith("!") for pattern in patterns)
    kept: list[str] = []
    for directory, subdirectories, files in os.walk(folder):
        relative = Path(directory).relative_to(folder).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        subdirectories.sort()
        for name in list(subdirectories):
            path = prefix + name
            excluded = matcher.excludes(path)
            if excluded and may_prune:
                subdirectories.remove(name)
            elif not excluded:
                kept.append(path)
        kept += [prefix + name for name in sorted(files) if not matcher.excludes(prefix + name)]
    return sorted(kept)


def pack(folder: Path, dockerfile: str = "Dockerfile") -> PackedContext:
    """The folder as the operator's context archive; ContextTooLargeError when it would not fit."""
    buffer = io.BytesIO()
    files: list[tuple[str, int]] = []
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in selected_paths(folder, dockerfile):
            member = archive.gettarinfo(folder / path, arcname=path)
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
            if member.isfile():
                files.append((path, member.size))
                with (folder / path).open("rb") as content:
                    archive.addfile(member, content)
            else:
                archive.addfile(member)
    data = buffer.getvalue()
    if len(data) > MAX_ARCHIVE_BYTES:
        largest = sorted(files, key=lambda item: (-item[1], item[0]))[:LARGEST_SHOWN]
        raise ContextTooLargeError(len(data), largest)
    return PackedContext(data, tuple(path for path, _ in files))


def _ignore_entry(path: str) -> str:
    """The `.dockerignore` line that leaves a large file out: its top folder, or the file itself."""
    top, _, rest = path.partition("/")
    return f"{top}/" if rest else path
