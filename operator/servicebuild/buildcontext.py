"""The files of a ConfigMap build context, as the build Pod lays them out; pure.

Each `data` and `binaryData` key is a file, unless `spec.source.configMap.archive` names a `.tar.gz` in
`binaryData`: then the archive's regular files are the context. The operator reads them after a build to
name the Dockerfile's target stage's instructions and to tell which files changed since the last build.
"""

import base64
import binascii
import hashlib
import io
import tarfile
from collections.abc import Mapping

MAX_UNPACKED_BYTES = 16 * 1024 * 1024
"""An archive unpacking to more is not read (a ConfigMap holds at most 1 MiB, gzip can hold far more)."""


def context_files(
    data: Mapping[str, str], binary_data: Mapping[str, str], archive: str | None
) -> dict[str, bytes] | None:
    """Path → content of every file of the context; None when the archive cannot be read within
    `MAX_UNPACKED_BYTES`."""
    if archive is None:
        files = {name: text.encode() for name, text in data.items()}
        for name, encoded in binary_data.items():
            decoded = _base64(encoded)
            if decoded is not None:
                files[name] = decoded
        return files
    packed = _base64(binary_data.get(archive, ""))
    return None if packed is None else _unpacked(packed)


def file_digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """Path → the first 16 hex digits of the content's sha256: enough to tell a change."""
    return {path: hashlib.sha256(content).hexdigest()[:16] for path, content in sorted(files.items())}


def _base64(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _unpacked(packed: bytes) -> dict[str, bytes] | None:
    files: dict[str, bytes] = {}
    left = MAX_UNPACKED_BYTES
    try:
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                left -= member.size
                extracted = tar.extractfile(member)
                if left < 0 or extracted is None:
                    return None
                files[member.name.removeprefix("./")] = extracted.read()
    except (tarfile.TarError, OSError, EOFError):
        return None
    return files
