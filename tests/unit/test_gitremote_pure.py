"""The git gateway's parts that need no server: URLs it refuses, picking a commit among refs.

The auth secret's parsing is tested in test_credentials.py, the URL forms in test_giturl.py.

We test these aspects:
- picking the commit among advertised refs: HEAD, branch before tag, the peeled value of an
  annotated tag, full ref names, an unborn HEAD;
- SSH remotes: a full commit id is returned as is, a branch or tag is SshResolutionUnsupported;
  URLs that are no git remote (file://, local paths, ftp://, git+ssh://, scp-style without a user,
  ssh:// without a repository path, a fragment) are UnsupportedSource, with a full commit id too,
  before any I/O, and the message shows no credentials;
- which errors are transient, and their reasons;
- a blob-less fetch's objects as a context: the context directory's files (nested, `./` and a trailing
  slash in contextDir alike) with git's blob ids, submodules left out, a missing directory empty, over
  MAX_CONTEXT_FILES not read; only the files read carry content;
- a server offers a blob-less fetch only with protocol v2 and `filter` in its `fetch` capability (git's
  own advertisements, with and without the `# service=` line, v0's, a sign-on page).
"""

import secrets

import pytest
from dulwich.index import commit_tree
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob, Commit, ObjectID

from servicebuild.buildcontext import relative
from servicebuild.credentials import GitCredentials
from servicebuild.gitremote import (
    MAX_CONTEXT_FILES,
    SSH_NEEDS_COMMIT,
    ContextTree,
    GitAuthFailed,
    GitError,
    GitRemote,
    GitUnavailable,
    InvalidGitSecret,
    RevisionNotFound,
    SourceNotFound,
    SshResolutionUnsupported,
    UnsupportedSource,
    context_blobs,
    offers_blob_less_fetch,
    select_commit,
)
from servicebuild.giturl import is_full_commit, parse_git_url

PASSWORD = f"pw-{secrets.token_hex(8)}"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
TAG_OBJECT = "fedcba9876543210fedcba9876543210fedcba98"


# ---------------------------------------------------------------------------------------------
# Picking the commit among advertised refs (as dulwich's ls-remote returns them)


REFS: dict[bytes, bytes | None] = {
    b"HEAD": COMMIT.encode(),
    b"refs/heads/main": COMMIT.encode(),
    b"refs/heads/release/1.x": OTHER.encode(),
    b"refs/heads/both": COMMIT.encode(),
    b"refs/tags/both": OTHER.encode(),
    b"refs/tags/v1.0": OTHER.encode(),
    b"refs/tags/v1.1": TAG_OBJECT.encode(),
    b"refs/tags/v1.1^{}": OTHER.encode(),
}


@pytest.mark.parametrize(
    ("revision", "commit"),
    [
        (None, COMMIT),
        ("HEAD", COMMIT),
        ("main", COMMIT),
        ("release/1.x", OTHER),
        ("v1.0", OTHER),
        ("v1.1", OTHER),  # the peeled commit, not the tag object
        ("refs/tags/v1.1", OTHER),
        ("refs/heads/main", COMMIT),
        ("both", COMMIT),  # a branch wins over a tag of the same name
        ("refs/tags/both", OTHER),
        ("nope", None),
        ("refs/heads/v1.0", None),
        ("1.x", None),
    ],
)
def test_select_commit(revision: str | None, commit: str | None) -> None:
    assert select_commit(REFS, revision) == commit


def test_unborn_head_selects_nothing() -> None:
    assert select_commit({b"HEAD": None}, None) is None


@pytest.mark.parametrize(
    ("revision", "full"),
    [(COMMIT, True), (COMMIT.upper(), True), (COMMIT[:39], False), (COMMIT + "0", False), ("main", False)],
)
def test_is_full_commit(revision: str, full: bool) -> None:
    assert is_full_commit(revision) is full


# ---------------------------------------------------------------------------------------------
# SSH and unsupported URLs: decided before any connection


SSH_URLS = [
    "ssh://git@git.example.com/shop/repo.git",
    "ssh://git.example.com:2222/shop/repo.git",
    "git@github.com:shop/repo.git",
]


@pytest.mark.parametrize("url", SSH_URLS)
def test_ssh_full_commit_is_returned_as_is(url: str) -> None:
    assert GitRemote(timeout=1.0).resolve(url, COMMIT.upper(), GitCredentials(ssh_private_key=KEY)) == COMMIT


@pytest.mark.parametrize("url", SSH_URLS)
@pytest.mark.parametrize("revision", [None, "main", "v1.0", COMMIT[:12]])
def test_ssh_branch_or_tag_is_unsupported(url: str, revision: str | None) -> None:
    with pytest.raises(SshResolutionUnsupported) as caught:
        GitRemote(timeout=1.0).resolve(url, revision, GitCredentials(ssh_private_key=KEY))
    assert SSH_NEEDS_COMMIT == "an SSH source needs spec.source.git.revision to be a full commit id"
    assert str(caught.value).endswith(SSH_NEEDS_COMMIT)
    assert parse_git_url(url).display in str(caught.value)
    assert not caught.value.transient
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/repo.git",
        "/var/lib/repo.git",
        "./repo.git",
        "ftp://host/repo.git",
        "https://host",
        "repo.git",
        "git+ssh://host/repo.git",
        "github.com:shop/repo.git",
        "ssh://git@git.example.com",
        f"https://user:{PASSWORD}@git.example.com/repo.git#main",
    ],
)
@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_urls_that_are_no_git_remote(url: str, revision: str) -> None:
    with pytest.raises(UnsupportedSource, match="is not an http") as caught:
        GitRemote(timeout=1.0).resolve(url, revision, None)
    assert caught.value.reason == "UnsupportedSource"
    assert not caught.value.transient
    assert PASSWORD not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The taxonomy


@pytest.mark.parametrize(
    ("error", "reason", "transient"),
    [
        (GitError("x"), "GitError", False),
        (GitAuthFailed("x"), "GitAuthFailed", False),
        (SourceNotFound("x"), "SourceNotFound", False),
        (RevisionNotFound("x"), "SourceNotFound", False),
        (GitUnavailable("x"), "GitUnavailable", True),
        (InvalidGitSecret("x"), "InvalidGitSecret", False),
        (UnsupportedSource("x"), "UnsupportedSource", False),
        (SshResolutionUnsupported("x"), "UnsupportedSource", False),
    ],
)
def test_reasons_and_transience(error: GitError, reason: str, transient: bool) -> None:
    assert error.reason == reason
    assert error.transient is transient


# ---------------------------------------------------------------------------------------------
# A context from a blob-less fetch's objects, and whether a server offers that fetch


def fetched(files: dict[str, bytes], submodules: tuple[str, ...] = ()) -> tuple[MemoryObjectStore, str]:
    """The objects a blob-less fetch of a commit holding `files` brings: the commit and its trees, no
    blobs; and the commit's id."""
    objects = MemoryObjectStore()
    entries = [(path.encode(), Blob.from_string(content).id, 0o100644) for path, content in files.items()]
    entries += [(path.encode(), ObjectID(OTHER.encode()), 0o160000) for path in submodules]
    holding_blobs = MemoryObjectStore()
    tree_id = commit_tree(holding_blobs, entries)
    for object_id in holding_blobs:
        if not isinstance(holding_blobs[object_id], Blob):
            objects.add_object(holding_blobs[object_id])
    commit = Commit()
    commit.tree, commit.message = tree_id, b"c"
    commit.author = commit.committer = b"A <a@example.com>"
    commit.commit_time = commit.author_time = 0
    commit.commit_timezone = commit.author_timezone = 0
    objects.add_object(commit)
    return objects, commit.id.decode()


MONOREPO = {
    "README.md": b"mono",
    "services/cart/Dockerfile": b"FROM scratch\n",
    "services/cart/.env": b"K=v",
    "services/cart/src/app.js": b"x",
    "services/web/Dockerfile": b"FROM scratch\n",
}


@pytest.mark.parametrize(
    ("context_dir", "paths"),
    [
        (None, sorted(MONOREPO)),
        ("services/cart", [".env", "Dockerfile", "src/app.js"]),
        ("./services/cart/", [".env", "Dockerfile", "src/app.js"]),
        ("services/none", []),
        ("README.md", []),
    ],
)
def test_the_context_directory_s_files_with_their_blob_ids(context_dir: str | None, paths: list[str]) -> None:
    objects, commit = fetched(MONOREPO, submodules=("services/cart/vendor",))

    blob_ids = context_blobs(objects, commit, context_dir)

    assert blob_ids is not None
    assert sorted(blob_ids) == paths, "submodules are left out, a missing directory is an empty context"
    prefix = relative(context_dir or "")
    for path, blob_id in blob_ids.items():
        assert blob_id == Blob.from_string(MONOREPO[f"{prefix}/{path}".lstrip("/")]).id.decode()


def test_a_context_of_too_many_files_is_not_read() -> None:
    objects, commit = fetched({f"f{index}": b"" for index in range(MAX_CONTEXT_FILES + 1)})
    assert context_blobs(objects, commit, None) is None
    objects, commit = fetched({f"f{index}": b"" for index in range(MAX_CONTEXT_FILES)})
    assert len(context_blobs(objects, commit, None) or {}) == MAX_CONTEXT_FILES


def test_a_context_s_files_carry_only_the_content_read() -> None:
    context = ContextTree({"Dockerfile": "a" * 40, "src/app.js": "b" * 40}, {"Dockerfile": b"FROM scratch\n"})
    assert context.files == {"Dockerfile": b"FROM scratch\n", "src/app.js": b""}


# As git 2.39's http-backend answers `GET …/info/refs?service=git-upload-pack`.
V2_WITH_FILTER = (
    b"000eversion 2\n0015agent=git/2.39.5\n0013ls-refs=unborn\n0027fetch=shallow wait-for-done filter\n"
    b"0012server-option\n0017object-format=sha1\n0010object-info\n0000"
)
V2_WITHOUT_FILTER = V2_WITH_FILTER.replace(
    b"0027fetch=shallow wait-for-done filter\n", b"0020fetch=shallow wait-for-done\n"
)
V0 = (
    b"001e# service=git-upload-pack\n0000"
    b"00b26f67156842fc8579138d1570450d2e4c48474407 HEAD\x00multi_ack thin-pack side-band shallow filter "
    b"no-progress symref=HEAD:refs/heads/main object-format=sha1 agent=git/2.39.5\n0000"
)


@pytest.mark.parametrize(
    ("advertisement", "offered"),
    [
        (V2_WITH_FILTER, True),
        (b"001e# service=git-upload-pack\n0000" + V2_WITH_FILTER, True),
        (V2_WITHOUT_FILTER, False),
        (V0, False),
        (b"<html>Sign in</html>", False),
        (b"", False),
    ],
)
def test_a_blob_less_fetch_needs_protocol_v2_with_filter(advertisement: bytes, offered: bool) -> None:
    assert offers_blob_less_fetch(advertisement) is offered
