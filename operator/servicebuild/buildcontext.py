"""The files of a ConfigMap build context, as the build Pod lays them out; pure.

Each `data` and `binaryData` key is a file, unless `spec.source.configMap.archive` names a `.tar.gz` in
`binaryData`: then the archive's regular files are the context. The operator reads them before a build to
check its Dockerfile (`findings`), and after it to name the target stage's instructions in the layers and
to tell which files changed since the last build (`cachemiss`).
"""

import base64
import binascii
import hashlib
import io
import posixpath
import tarfile
import zlib
from collections.abc import Mapping

MAX_UNPACKED_BYTES = 32 * 1024 * 1024
"""An archive unpacking to more is not read: a ConfigMap holds at most 1 MiB, gzip can hold far more, and
one ConfigMap must not hold the operator's memory."""


def context_files(
    data: Mapping[str, str], binary_data: Mapping[str, str], archive: str | None
) -> dict[str, bytes] | None:
    """Path (relative, `/`-separated) → content of every file of the context; None when the archive is no
    `.tar.gz` or unpacks to more than `MAX_UNPACKED_BYTES`."""
    if archive is None:
        files = {relative(name): text.encode() for name, text in data.items()}
        for name, encoded in binary_data.items():
            decoded = _base64(encoded)
            if decoded is not None:
                files[relative(name)] = decoded
        return files
    packed = _base64(binary_data.get(archive, ""))
    unpacked = _gunzip(packed) if packed is not None else None
    return _untarred(unpacked) if unpacked is not None else None


def relative(path: str) -> str:
    """A context path as BuildKit sees it: `./a`, `/a` and `a` are the same file."""
    return posixpath.normpath("/" + path).lstrip("/")


def file_digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """Path → the first 16 hex digits of the content's sha256: enough to tell a change."""
    return {path: hashlib.sha256(content).hexdigest()[:16] for path, content in sorted(files.items())}


def _base64(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _gunzip(compressed: bytes) -> bytes | None:
    """The tar stream, unpacked at most `MAX_UNPACKED_BYTES` (so a gzip bomb stops there)."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        unpacked = decompressor.decompress(compressed, MAX_UNPACKED_BYTES)
    except zlib.error:
        return None
    return unpacked if not decompressor.unconsumed_tail else None


def _untarred(stream: bytes) -> dict[str, bytes] | None:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[relative(member.name)] = extracted.read()
    except (tarfile.TarError, OSError, EOFError):
        return None
    return files
