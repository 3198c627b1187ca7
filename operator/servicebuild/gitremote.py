"""Git gateway: the only module that talks to git remotes; it resolves a revision to a commit id and
reads a commit's build context for the Dockerfile rules.

Resolving reads the refs only (`git ls-remote`), never objects, so it is cheap even for a large
monorepo. Reading a context (`GitRemote.context_tree`) is two fetches of protocol v2 over HTTP(S): the
commit with `deepen 1` and `filter blob:none` (its trees, so every path and blob id, and no file's
content), then the few blobs the rules read, wanted by id. A server that offers no `filter` (or speaks
only v0/v1) is not asked for objects at all: the context is "not checked" (None), so a big repository is
never pulled into the operator. git:// is not read either (dulwich's TCP client takes no timeout and
shows no capabilities). HTTP(S) uses basic auth with the auth secret's token or password; git:// is
anonymous. SSH remotes are not contacted (see `SshResolutionUnsupported`).

Dulwich is used through its public API only, so that an upgrade breaks loudly or not at all:
- HTTP(S): its `Urllib3HttpGitClient`, given (the public `pool_manager=`) a urllib3 pool manager of
  ours whose `urlopen` checks every answer before dulwich reads it: a status other than 200, or refs
  that are not git's (a login page, a dumb server), become our errors, by status code;
- git://: its pkt-line `Protocol` and its ls-remote steps (`negotiate_protocol_version`,
  `build_ls_refs_request_v2`, `read_pkt_refs_v1`/`_v2`) on a socket of ours with a timeout, as its
  `TCPGitClient` opens one without and takes none.
"""

import io
import re
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from dulwich.client import (
    Urllib3HttpGitClient,
    build_ls_refs_request_v2,
    default_urllib3_manager,
    extract_object_format_from_capabilities,
    negotiate_protocol_version,
    read_pkt_refs_v1,
    read_pkt_refs_v2,
    read_server_capabilities,
)
from dulwich.errors import GitProtocolError, HangupException
from dulwich.object_store import MemoryObjectStore, ObjectStoreGraphWalker
from dulwich.objects import S_ISGITLINK, Blob, Commit, ObjectID, Tree
from dulwich.protocol import PEELED_TAG_SUFFIX, TCP_GIT_PORT, Protocol, parse_capability
from dulwich.refs import Ref

from servicebuild.buildcontext import relative
from servicebuild.credentials import DEFAULT_USERNAME, GitCredentials
from servicebuild.credentials import GitError as GitError  # noqa: PLC0414 (re-exported, PEP 484)
from servicebuild.credentials import InvalidGitSecret as InvalidGitSecret  # noqa: PLC0414 (re-exported)
from servicebuild.giturl import GitUrl, is_full_commit, parse_git_url

SSH_NEEDS_COMMIT = "an SSH source needs spec.source.git.revision to be a full commit id"

_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,39}$")
_HEAD = Ref(b"HEAD")
# No retries inside urllib3: each resolve stays within about one `timeout`, and the reconciler
# retries transient failures itself. Redirects (a renamed project) are still followed.
_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)
_DELIM_PKT = b"0001"
"""Protocol v2's delimiter between a command's capabilities and its arguments."""
MAX_PACK_BYTES = 8 * 1024 * 1024
"""The most one fetch of a context read may receive: the commit's trees, then the blobs the rules read. A
repository whose trees pack to more is not checked (a tree entry packs to some 30 bytes: about 250,000
files)."""
MAX_CONTEXT_FILES = 50_000
"""A context directory holding more files is not checked: the file list stays small to hold and match."""
MAX_READ_BLOBS = 64
"""At most this many files' contents are fetched (the Dockerfile, its ignore file, the secret holders)."""
_ADVERTISEMENT_BYTES = 64 * 1024
"""Protocol v2's capability advertisement is a few hundred bytes; v0's lists every ref, and is not read."""


# The names below are part of the project's vocabulary (the status reasons use them), hence N818.
# GitError and InvalidGitSecret are in credentials.py: reading an auth secret raises them.
class GitAuthFailed(GitError):  # noqa: N818
    """The remote refused the credentials, or needs some and none were given."""

    reason = "GitAuthFailed"


class SourceNotFound(GitError):  # noqa: N818
    """The repository does not exist (or is hidden from these credentials, as many hosts do)."""

    reason = "SourceNotFound"


class RevisionNotFound(SourceNotFound):
    """The repository has no branch or tag of that name."""


class GitUnavailable(GitError):  # noqa: N818
    """Connection failure, timeout, 5xx or 429: worth retrying later."""

    transient = True
    reason = "GitUnavailable"


class UnsupportedSource(GitError):  # noqa: N818
    """The URL is no git remote the operator can read (only http, https, git, ssh and scp-style)."""

    reason = "UnsupportedSource"


class SshResolutionUnsupported(UnsupportedSource):
    """An SSH remote with a branch or tag: the operator has no SSH client to list its refs.

    Dulwich ships no in-process SSH transport (only one spawning `ssh`, which would need the key
    on disk and an ssh binary in the operator's image), so SSH sources must name the commit.
    """


class _NotChecked(Exception):  # noqa: N818 (an answer: the context is not read, and that is no failure)
    """The remote cannot give a context without a full fetch (no `filter`, no protocol v2), or it is
    larger than the bounds."""


@dataclass(frozen=True)
class ContextTree:
    """A commit's build context as the Dockerfile rules read it."""

    blob_ids: Mapping[str, str]
    """Path (relative to the context directory, `/`-separated) → blob id, for every file."""
    contents: Mapping[str, bytes]
    """The content of the files the rules read, by path."""

    @property
    def files(self) -> dict[str, bytes]:
        """Every file by path; only the files read carry content, the others are empty."""
        return {path: self.contents.get(path, b"") for path in self.blob_ids}


def select_commit(refs: Mapping[Ref, bytes | None], revision: str | None) -> str | None:
    """The commit `revision` names among advertised refs, or None.

    None (or `HEAD`) is the remote's HEAD; a full ref name (`refs/...`) is looked up as is;
    otherwise a branch wins over a tag of the same name, and an annotated tag is peeled.
    """
    if revision is None or revision == "HEAD":
        candidates = [_HEAD]
    elif revision.startswith("refs/"):
        candidates = [Ref(revision.encode())]
    else:
        candidates = [Ref(f"refs/heads/{revision}".encode()), Ref(f"refs/tags/{revision}".encode())]
    for name in candidates:
        peeled = refs.get(Ref(name + PEELED_TAG_SUFFIX))
        value = peeled or refs.get(name)
        if value:
            return value.decode("ascii")
    return None


class GitRemote:
    """Resolves revisions by listing a remote's refs; one per operator, shared by all handlers."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    def resolve(self, url: str, revision: str | None, credentials: GitCredentials | None) -> str:
        """The commit id that `revision` (default: the remote's HEAD) names in the repository at `url`.

        A full commit id is returned as is, without contacting the remote: whether the remote has
        that commit cannot be checked without fetching objects, so the build finds out.
        """
        try:
            remote = parse_git_url(url)
        except ValueError as error:
            raise UnsupportedSource(str(error)) from None
        if revision is not None and is_full_commit(revision):
            return revision.lower()
        if remote.is_ssh:
            raise SshResolutionUnsupported(f"{remote.display}: {SSH_NEEDS_COMMIT}")
        if remote.scheme != "git":
            _check_http_credentials(remote, credentials)
        wanted = [b"HEAD"] if revision in (None, "HEAD") else _prefixes(revision)
        try:
            if remote.scheme == "git":
                refs = _git_protocol_refs(remote, wanted, self._timeout)
            else:
                refs = _http_refs(remote, wanted, credentials, self._timeout)
        except Exception as error:
            raise _classified(error, remote, credentials) from error
        commit = select_commit(refs, revision)
        if commit is not None:
            return commit
        if revision in (None, "HEAD"):
            raise RevisionNotFound(f"{remote.display} has no default branch with a commit (HEAD is unborn)")
        hint = (
            "; abbreviated commit ids cannot be resolved remotely, give all 40 hex digits"
            if revision and _HEX_RE.match(revision)
            else ""
        )
        raise RevisionNotFound(f"{remote.display} has no branch or tag {revision!r}{hint}")

    def context_tree(
        self,
        url: str,
        commit: str,
        credentials: GitCredentials | None,
        context_dir: str | None,
        read: Callable[[str], bool],
    ) -> ContextTree | None:
        """The files of `context_dir` (default: the root) at `commit`, with the content of those `read`
        selects; None ("not checked") for git:// and SSH remotes, a server without protocol v2's `filter`,
        or a context over `MAX_PACK_BYTES` or `MAX_CONTEXT_FILES`. Errors are classified as `resolve`'s."""
        try:
            remote = parse_git_url(url)
        except ValueError as error:
            raise UnsupportedSource(str(error)) from None
        if remote.scheme not in {"http", "https"}:
            return None
        _check_http_credentials(remote, credentials)
        client, close = _http_client(remote, credentials, self._timeout, blob_less=True)
        try:
            trees = _fetch(client, remote, [commit], depth=1, filter_spec=b"blob:none")
            blob_ids = context_blobs(trees, commit, context_dir)
            if blob_ids is None:
                return None
            wanted = sorted(path for path in blob_ids if read(path))[:MAX_READ_BLOBS]
            blobs = _fetch(client, remote, sorted({blob_ids[path] for path in wanted})) if wanted else trees
            contents = {path: _blob_bytes(blobs, blob_ids[path]) for path in wanted}
        except _NotChecked:
            return None
        except Exception as error:
            raise _classified(error, remote, credentials) from error
        finally:
            close()
        return ContextTree(blob_ids, contents)


def context_blobs(objects: MemoryObjectStore, commit: str, context_dir: str | None) -> dict[str, str] | None:
    """Path (relative to `context_dir`) → blob id of every file under it at `commit`, from a blob-less
    fetch's objects; None over `MAX_CONTEXT_FILES`. A context directory the commit lacks is an empty
    context (BuildKit fails that build with its own message); submodules are left out (BuildKit fetches
    them from other repositories)."""
    commit_object = objects[ObjectID(commit.encode())]
    if not isinstance(commit_object, Commit):
        return {}
    tree_id = commit_object.tree
    for name in filter(None, relative(context_dir or "").split("/")):
        tree = _tree(objects, tree_id)
        if name.encode() not in tree or not stat.S_ISDIR(tree[name.encode()][0]):
            return {}
        tree_id = tree[name.encode()][1]
    files: dict[str, str] = {}
    pending = [("", tree_id)]
    while pending:
        prefix, current = pending.pop()
        for entry in _tree(objects, current).iteritems():
            path = prefix + entry.path.decode(errors="replace")
            if stat.S_ISDIR(entry.mode):
                pending.append((f"{path}/", entry.sha))
            elif not S_ISGITLINK(entry.mode):
                files[path] = entry.sha.decode("ascii")
        if len(files) > MAX_CONTEXT_FILES:
            return None
    return files


def offers_blob_less_fetch(advertisement: bytes) -> bool:
    """Whether a ref advertisement (`GET …/info/refs`) is protocol v2's with `fetch=… shallow … filter`."""
    proto = Protocol(io.BytesIO(advertisement).read, lambda _: None)
    try:
        first = proto.read_pkt_line()
        if first is not None and first.startswith(b"# service="):
            proto.read_pkt_line()  # the flush after the service line some servers send
        else:
            proto.unread_pkt_line(first)
        if negotiate_protocol_version(proto) != 2:
            return False
        capabilities = read_server_capabilities(proto.read_pkt_seq())
    except (GitProtocolError, HangupException, ValueError):
        return False
    for capability in capabilities:
        name, value = parse_capability(capability)
        if name == b"fetch":
            return {b"shallow", b"filter"} <= set((value or b"").split())
    return False


def _tree(objects: MemoryObjectStore, tree_id: bytes) -> Tree:
    tree = objects[ObjectID(tree_id)]
    if not isinstance(tree, Tree):
        raise GitProtocolError("the blob-less fetch lacks a tree")
    return tree


def _blob_bytes(objects: MemoryObjectStore, blob_id: str) -> bytes:
    blob = objects[ObjectID(blob_id.encode())]
    if not isinstance(blob, Blob):
        raise GitProtocolError("the fetch of blobs lacks one")
    return blob.as_raw_string()


def _fetch(
    client: Urllib3HttpGitClient, remote: GitUrl, wants: list[str], **options: Any
) -> MemoryObjectStore:
    """The objects `wants` names (and what `options` adds), by protocol v2, within `MAX_PACK_BYTES`."""
    received = io.BytesIO()

    def write(data: bytes) -> int:
        if received.tell() + len(data) > MAX_PACK_BYTES:
            raise _NotChecked
        return received.write(data)

    client.fetch_pack(
        remote.path.encode(),
        lambda refs, depth=None: [ObjectID(want.encode()) for want in wants],  # noqa: ARG005 (dulwich names them)
        ObjectStoreGraphWalker([], lambda _: []),
        write,
        ref_prefix=[_HEAD],  # protocol v2 lists refs before a fetch: only HEAD, not a monorepo's thousands
        protocol_version=2,
        **options,
    )
    objects = MemoryObjectStore()
    pack, commit, _ = objects.add_pack()
    pack.write(received.getvalue())
    commit()
    return objects


def _check_http_credentials(remote: GitUrl, credentials: GitCredentials | None) -> None:
    if credentials is not None and credentials.password is None:
        raise InvalidGitSecret(
            f"{remote.display}: the auth secret holds an SSH key, but an HTTP(S) URL needs "
            "'token' or 'password'"
        )


def _prefixes(revision: str) -> list[bytes]:
    if revision.startswith("refs/"):
        return [revision.encode()]
    return [f"refs/heads/{revision}".encode(), f"refs/tags/{revision}".encode()]


def _classified(error: Exception, remote: GitUrl, credentials: GitCredentials | None) -> GitError:
    """Map what dulwich, urllib3 and sockets raise to the taxonomy; messages carry no secrets."""
    where = remote.display
    if isinstance(error, _HttpAnswer):
        return error.classified(where, credentials)
    if isinstance(error, HangupException):
        # git daemon hangs up without a word also on a repository it does not export.
        return GitUnavailable(f"{where}: the remote hung up")
    cause = _root_cause(error)
    if isinstance(cause, OSError | urllib3.exceptions.HTTPError):
        return GitUnavailable(f"{where} is unreachable: {_describe(cause)}")
    if isinstance(error, GitProtocolError) and remote.scheme == "git":
        return _daemon_error(str(error), where)
    return GitError(f"{where} did not answer as a git server should ({type(error).__name__})")


def _daemon_error(text: str, where: str) -> GitError:
    """An `ERR` line of git daemon (with --informative-errors): its own words, no credentials in them."""
    if any(words in text.lower() for words in ("no such repository", "not exported", "not found")):
        return SourceNotFound(f"{where}: no such repository ({text})")
    return GitError(f"{where}: the git server answered an error: {text}")


def _root_cause(error: BaseException) -> BaseException:
    seen: set[int] = set()
    current: BaseException = error
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError wraps the real error
        following = reason if isinstance(reason, BaseException) else current.__cause__ or current.__context__
        if following is None:
            break
        current = following
    return current


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    return type(error).__name__


def _http_status_error(status: int, where: str, credentials: GitCredentials | None) -> GitError:
    if status in (401, 403):
        if credentials is None:
            return GitAuthFailed(
                f"{where} answered HTTP {status}: it needs credentials and no auth secret is set"
            )
        return GitAuthFailed(f"{where} answered HTTP {status}: the auth secret's credentials were rejected")
    if status == 404:
        hint = " or not visible to these credentials" if credentials is not None else ""
        return SourceNotFound(f"{where} answered HTTP 404: no such repository{hint}")
    if status in (408, 429) or status >= 500:
        return GitUnavailable(f"{where} answered HTTP {status}")
    return GitError(f"{where} answered HTTP {status}")


# ---------------------------------------------------------------------------------------------
# Smart HTTP: dulwich's client, with a urllib3 pool manager of ours that checks each answer


def _http_refs(
    remote: GitUrl, wanted: list[bytes], credentials: GitCredentials | None, timeout: float
) -> Mapping[Ref, bytes | None]:
    client, close = _http_client(remote, credentials, timeout, blob_less=False)
    try:
        return client.get_refs(remote.path.encode(), ref_prefix=wanted).refs
    finally:
        close()


def _http_client(
    remote: GitUrl, credentials: GitCredentials | None, timeout: float, *, blob_less: bool
) -> tuple[Urllib3HttpGitClient, Callable[[], None]]:
    """Dulwich's HTTP client on a pool manager of ours, and how to close its connections; `blob_less`: one
    that lets no fetch start unless the server offers protocol v2's `filter`."""
    base_url = f"{remote.origin}/"
    # config=None: the operator's own git config (if any) must not change what users get;
    # proxies still come from the environment (https_proxy, no_proxy).
    pool = default_urllib3_manager(
        None,
        pool_manager_cls=_BlobLessPoolManager if blob_less else _PoolManager,
        proxy_manager_cls=_BlobLessProxyManager if blob_less else _ProxyManager,
        base_url=base_url,
        timeout=timeout,
    )
    client = Urllib3HttpGitClient(
        base_url,
        pool_manager=pool,
        timeout=timeout,
        thin_packs=False,  # a pack whose deltas all resolve within it: nothing is kept locally
        username=(credentials.username or DEFAULT_USERNAME) if credentials else None,
        password=credentials.password if credentials else None,
    )
    return client, pool.clear


class _HttpAnswer(Exception):  # noqa: N818 (an answer, not a failure of ours)
    """What a git HTTP server answered instead of a ref advertisement; the pool manager raises it before
    dulwich reads the body, and `classified` maps it to the taxonomy by status code."""

    def __init__(self, status: int, content_type: str) -> None:
        super().__init__(f"HTTP {status} ({content_type})")
        self.status = status
        self.content_type = content_type

    def classified(self, where: str, credentials: GitCredentials | None) -> GitError:
        if self.status != 200:
            return _http_status_error(self.status, where, credentials)
        # A login page or a dumb (static) server: dulwich would parse it as a ref list.
        return GitError(
            f"{where} does not speak git's smart HTTP protocol (Content-Type {self.content_type!r})"
        )


def _checked(response: urllib3.BaseHTTPResponse, url: str) -> urllib3.BaseHTTPResponse:
    """The response if it is what dulwich should read: 200, and git's own Content-Type for the refs."""
    content_type = response.headers.get("Content-Type", "")
    refs = (urllib3.util.parse_url(url).path or "").endswith("/info/refs")
    if response.status != 200 or (refs and not content_type.startswith("application/x-git-")):
        response.close()
        raise _HttpAnswer(response.status, content_type)
    return response


def _advertising_blob_less_fetch(response: urllib3.BaseHTTPResponse, url: str) -> urllib3.BaseHTTPResponse:
    """The ref advertisement `response`, read and handed on whole, when it offers a blob-less fetch;
    `_NotChecked` otherwise, raised before dulwich asks for any object."""
    if not (urllib3.util.parse_url(url).path or "").endswith("/info/refs"):
        return response
    advertisement = response.read(_ADVERTISEMENT_BYTES + 1)
    response.close()
    if len(advertisement) > _ADVERTISEMENT_BYTES or not offers_blob_less_fetch(advertisement):
        raise _NotChecked
    return urllib3.HTTPResponse(
        body=io.BytesIO(advertisement),
        headers=response.headers,
        status=response.status,
        preload_content=False,
        decode_content=False,  # read decoded already
        request_url=url,
        retries=response.retries,  # where a redirect led, which dulwich reads (geturl)
    )


# `urlopen` is the one method urllib3's `request` (what dulwich calls) goes through; a redirect is
# followed inside it, so the response checked is the last one.
class _PoolManager(urllib3.PoolManager):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(retries=_RETRIES, **kwargs)

    def urlopen(self, method: str, url: str, *args: Any, **kw: Any) -> urllib3.BaseHTTPResponse:
        return _checked(super().urlopen(method, url, *args, **kw), url)


class _ProxyManager(urllib3.ProxyManager):
    def __init__(self, proxy_url: str, **kwargs: Any) -> None:
        super().__init__(proxy_url, retries=_RETRIES, **kwargs)

    def urlopen(self, method: str, url: str, *args: Any, **kw: Any) -> urllib3.BaseHTTPResponse:
        return _checked(super().urlopen(method, url, *args, **kw), url)


class _BlobLessPoolManager(_PoolManager):
    def urlopen(self, method: str, url: str, *args: Any, **kw: Any) -> urllib3.BaseHTTPResponse:
        return _advertising_blob_less_fetch(super().urlopen(method, url, *args, **kw), url)


class _BlobLessProxyManager(_ProxyManager):
    def urlopen(self, method: str, url: str, *args: Any, **kw: Any) -> urllib3.BaseHTTPResponse:
        return _advertising_blob_less_fetch(super().urlopen(method, url, *args, **kw), url)


# ---------------------------------------------------------------------------------------------
# git://: dulwich's pkt-line protocol and ref readers, on a socket of ours


def _git_protocol_refs(remote: GitUrl, wanted: list[bytes], timeout: float) -> Mapping[Ref, bytes | None]:
    """`git ls-remote` over git://, as dulwich's TCPGitClient.get_refs does it, on a socket with a timeout:
    TCPGitClient opens its own without one, so a server that never answers would hang the operator."""
    path = remote.path.encode()
    path = path[1:] if path.startswith(b"/~") else path  # git://host/~user/repo is the user's repo
    with (
        socket.create_connection(
            (remote.hostname, remote.port or TCP_GIT_PORT), timeout=timeout
        ) as connection,
        connection.makefile("rb") as reader,
        connection.makefile("wb", buffering=0) as writer,
    ):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proto = Protocol(reader.read, writer.write)
        # Version 2 hides behind two NUL bytes, as old servers would choke on more than host=.
        proto.send_cmd(b"git-upload-pack", path, b"host=" + remote.hostname.encode() + b"\0\0version=2\0")
        refs: dict[Ref, bytes | None]
        if negotiate_protocol_version(proto) == 2:
            capabilities = read_server_capabilities(proto.read_pkt_seq())
            object_format = extract_object_format_from_capabilities(capabilities)
            commands, arguments = build_ls_refs_request_v2(capabilities, object_format, wanted)
            for line in commands:
                proto.write_pkt_line(line)
            proto.write(_DELIM_PKT)
            for line in arguments:
                proto.write_pkt_line(line)
            proto.write_pkt_line(None)
            listed, _, peeled = read_pkt_refs_v2(proto.read_pkt_seq())
            refs = {**listed, **{Ref(name + PEELED_TAG_SUFFIX): value for name, value in peeled.items()}}
        else:
            refs = dict(read_pkt_refs_v1(proto.read_pkt_seq())[0])
        proto.write_pkt_line(None)
        return refs
