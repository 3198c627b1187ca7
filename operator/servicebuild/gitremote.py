"""Git gateway: the only module that talks to git remotes; it resolves a revision to a commit id.

Only the refs are read (`git ls-remote`), never objects, so resolving is cheap even for a large
monorepo. HTTP(S) uses basic auth with the auth secret's token or password; git:// is anonymous.
SSH remotes are not contacted (see `SshResolutionUnsupported`).

Dulwich is used through its public API only, so that an upgrade breaks loudly or not at all:
- HTTP(S): its `Urllib3HttpGitClient`, given (the public `pool_manager=`) a urllib3 pool manager of
  ours whose `urlopen` checks every answer before dulwich reads it: a status other than 200, or refs
  that are not git's (a login page, a dumb server), become our errors, by status code;
- git://: its pkt-line `Protocol` and its ls-remote steps (`negotiate_protocol_version`,
  `build_ls_refs_request_v2`, `read_pkt_refs_v1`/`_v2`) on a socket of ours with a timeout, as its
  `TCPGitClient` opens one without and takes none.
"""

import re
import socket
from collections.abc import Mapping
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
from dulwich.protocol import PEELED_TAG_SUFFIX, TCP_GIT_PORT, Protocol
from dulwich.refs import Ref

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
        if remote.scheme != "git" and credentials is not None and credentials.password is None:
            raise InvalidGitSecret(
                f"{remote.display}: the auth secret holds an SSH key, but an HTTP(S) URL needs "
                "'token' or 'password'"
            )
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
    base_url = f"{remote.origin}/"
    # config=None: the operator's own git config (if any) must not change what users get;
    # proxies still come from the environment (https_proxy, no_proxy).
    pool = default_urllib3_manager(
        None,
        pool_manager_cls=_PoolManager,
        proxy_manager_cls=_ProxyManager,
        base_url=base_url,
        timeout=timeout,
    )
    client = Urllib3HttpGitClient(
        base_url,
        pool_manager=pool,
        timeout=timeout,
        username=(credentials.username or DEFAULT_USERNAME) if credentials else None,
        password=credentials.password if credentials else None,
    )
    try:
        return client.get_refs(remote.path.encode(), ref_prefix=wanted).refs
    finally:
        pool.clear()


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
