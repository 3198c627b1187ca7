"""A ConfigMap context's `.tar.gz` archive, base64 as `binaryData` holds it."""

import base64
import gzip
import io
import tarfile


def tar_gz(files: dict[str, bytes], folders: tuple[str, ...] = ()) -> str:
    """An archive of `files` (path → content) and empty `folders`, base64-encoded."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
        for name in folders:
            folder = tarfile.TarInfo(name)
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
    return base64.b64encode(gzip.compress(buffer.getvalue())).decode()
