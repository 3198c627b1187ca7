"""We test these aspects of packing a folder for `kubectl servicebuild build --from-dir`:

- the files packed are exactly those Docker's own implementation of the `.dockerignore` rules keeps
  (the `docker` package's build-context exclusion), over a table of patterns: `**`, `!`, a leading `/`,
  directories, the Dockerfile and `.dockerignore` kept even when ignored;
- the archive is the format the operator unpacks (a gzipped tar of the folder's relative paths) and the
  same folder packs to the same bytes, so an unchanged folder starts no build;
- a context over what a ConfigMap holds is refused naming its largest files, with `.dockerignore`
  entries that leave them out.
"""

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from servicebuild.cli.context import MAX_ARCHIVE_BYTES, ContextTooLargeError, pack, selected_paths

TREE = [
    "Dockerfile",
    "README.md",
    "CHANGELOG.md",
    ".env",
    "main.py",
    "app/__init__.py",
    "app/server.py",
    "app/__pycache__/server.cpython-311.pyc",
    "app/static/logo.png",
    "app/.env",
    "docs/index.md",
    "docs/api/reference.md",
    "node_modules/left-pad/index.js",
    "web/node_modules/react/index.js",
    "secrets/private.pem",
    "secrets/public.pem",
    "build/temp/out.o",
    "tests/test_server.py",
]

PATTERNS = [
    # (what the case shows, .dockerignore)
    ("no .dockerignore", None),
    ("`**/` at any depth", "**/__pycache__\n**/*.pyc"),
    ("`**/.env` nested and top level", "**/.env"),
    ("a name is anchored at the root", ".env\nnode_modules"),
    ("a leading `/` is the root", "/node_modules\n/docs"),
    ("a directory takes what is below it", "docs/\nsecrets"),
    ("`!` takes a file back out of an excluded directory", "secrets\n!secrets/public.pem"),
    ("`*.md` with `!README.md`", "*.md\n!README.md"),
    ("an allow-list", "*\n!app\n!main.py\napp/__pycache__"),
    ("`dir/**` takes everything below", "docs/**\nbuild/**"),
    ("`*/` is one level", "*/temp\n*/*.md"),
    ("comments and blank lines", "# the docs\n\ndocs\n  \n#secrets"),
    ("the Dockerfile and .dockerignore stay even when ignored", "Dockerfile\n.dockerignore\n*.py"),
]


def _make_tree(root: Path) -> None:
    for number, path in enumerate(TREE):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"{path}: {number}\n")


def _docker_selection(root: Path) -> set[str]:
    """What `docker build` sends, as the docker package reads `.dockerignore` and excludes paths."""
    ignore = root / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return {path for path in exclude_paths(str(root), patterns) if (root / path).is_file()}


def _archive_files(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as packed:
        return {
            member.name: packed.extractfile(member).read()  # type: ignore[union-attr]
            for member in packed.getmembers()
            if member.isfile()
        }


@pytest.mark.parametrize("dockerignore", [case[1] for case in PATTERNS], ids=[case[0] for case in PATTERNS])
def test_the_packed_files_are_those_docker_keeps(tmp_path: Path, dockerignore: str | None) -> None:
    _make_tree(tmp_path)
    if dockerignore is not None:
        (tmp_path / ".dockerignore").write_text(dockerignore + "\n")
    packed = pack(tmp_path)
    expected = _docker_selection(tmp_path)
    assert set(packed.files) == expected
    files = _archive_files(packed.archive)
    assert set(files) == expected
    assert all(files[path] == (tmp_path / path).read_bytes() for path in files)


def test_directories_are_packed_when_kept_so_empty_ones_survive(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "data" / "cache").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / ".dockerignore").write_text("logs\n")
    assert selected_paths(tmp_path) == [".dockerignore", "Dockerfile", "data", "data/cache"]


def test_the_same_folder_packs_to_the_same_bytes(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    first = pack(tmp_path).archive
    for path in TREE:  # other times and a fresh inode: nothing of it may reach the archive
        os.utime(tmp_path / path, (1_000_000, 1_000_000))
    assert pack(tmp_path).archive == first
    (tmp_path / "main.py").write_text("changed\n")
    assert pack(tmp_path).archive != first


def test_the_archive_is_the_gzipped_tar_the_operator_unpacks(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    archive = pack(tmp_path).archive
    assert archive[:2] == b"\x1f\x8b"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive)), mode="r:") as packed:
        names = packed.getnames()
    assert "app/server.py" in names
    assert not any(name.startswith(("/", "./", "../")) for name in names)


def test_a_context_too_large_names_its_largest_files_and_what_to_ignore(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dump.bin").write_bytes(os.urandom(MAX_ARCHIVE_BYTES))
    (tmp_path / "model.onnx").write_bytes(os.urandom(300_000))
    with pytest.raises(ContextTooLargeError) as raised:
        pack(tmp_path)
    assert [path for path, _ in raised.value.largest[:2]] == ["data/dump.bin", "model.onnx"]
    assert raised.value.suggestions[:2] == ["data/", "model.onnx"]
    assert "data/dump.bin" in str(raised.value)
    assert "1.0 MiB a ConfigMap holds" in str(raised.value)
    (tmp_path / ".dockerignore").write_text("\n".join(raised.value.suggestions[:2]))
    assert "data/dump.bin" not in pack(tmp_path).files
