"""Git gateway: the only module that talks to git remotes; it resolves a revision to a commit id.

Only the refs are read (`git ls-remote`), never objects, so resolving is cheap even for a large
monorepo. HTTP(S) uses basic auth with the auth secret's token or password; git:// is anonymous.
SSH remotes are not contacted (see `SshResolutionUnsupported`).
"""

import re
import select
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import urllib3
from dulwich.client import (
    GitClient,
    HTTPUnauthorized,
    TCPGitClient,
    Urllib3HttpGitClient,
    default_urllib3_manager,
)
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.protocol import DEFAULT_GIT_PROTOCOL_VERSION_FETCH, PEELED_TAG_SUFFIX, Protocol
from dulwich.refs import Ref

from servicebuild.credentials import DEFAULT_USERNAME, GitCredentials
from servicebuild.credentials import GitError as GitError  # noqa: PLC0414 (re-exported, PEP 484)
from servicebuild.credentials import InvalidGitSecret as InvalidGitSecret  # noqa: PLC0414 (re-exported)
from servicebuild.giturl import GitUrl, parse_git_url

if TYPE_CHECKING:
    from dulwich.client import HTTPResponse

SSH_NEEDS_COMMIT = "an SSH source needs spec.source.git.revision to be a full commit id"

_FULL_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{40}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,39}$")
_HEAD = Ref(b"HEAD")
# No retries inside urllib3: each resolve stays within about one `timeout`, and the reconciler
# retries transient failures itself. Redirects (a renamed project) are still followed.
_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)


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


def is_full_commit(revision: str) -> bool:
    """A full (40 hex digit) commit id, as opposed to a branch, tag or abbreviated id."""
    return bool(_FULL_COMMIT_RE.match(revision))


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
        client = self._client(remote, credentials)
        wanted = [b"HEAD"] if revision in (None, "HEAD") else _prefixes(revision)
        try:
            refs = client.get_refs(remote.path.encode(), ref_prefix=wanted).refs
        except GitError:
            raise
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

    def _client(self, remote: GitUrl, credentials: GitCredentials | None) -> GitClient:
        if remote.scheme == "git":
            return _TcpClient(remote.hostname, remote.port, self._timeout, remote.display)
        if credentials is not None and credentials.password is None:
            raise InvalidGitSecret(
                f"{remote.display}: the auth secret holds an SSH key, but an HTTP(S) URL needs "
                "'token' or 'password'"
            )
        return _HttpClient(remote, credentials, self._timeout)


def _prefixes(revision: str) -> list[bytes]:
    if revision.startswith("refs/"):
        return [revision.encode()]
    return [f"refs/heads/{revision}".encode(), f"refs/tags/{revision}".encode()]


def _classified(error: Exception, remote: GitUrl, credentials: GitCredentials | None) -> GitError:
    """Map what dulwich, urllib3 and sockets raise to the taxonomy; messages carry no secrets."""
    where = remote.display
    if isinstance(error, HTTPUnauthorized):
        return _http_status_error(401, where, credentials)
    if isinstance(error, NotGitRepository):
        return _http_status_error(404, where, credentials)
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


class _PoolManager(urllib3.PoolManager):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(retries=_RETRIES, **kwargs)


class _ProxyManager(urllib3.ProxyManager):
    def __init__(self, proxy_url: str, **kwargs: Any) -> None:
        super().__init__(proxy_url, retries=_RETRIES, **kwargs)


class _HttpClient(Urllib3HttpGitClient):
    """Dulwich's HTTP client with errors mapped by status code, not by parsing its messages."""

    def __init__(self, remote: GitUrl, credentials: GitCredentials | None, timeout: float) -> None:
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
        super().__init__(
            base_url,
            pool_manager=pool,
            timeout=timeout,
            username=(credentials.username or DEFAULT_USERNAME) if credentials else None,
            password=credentials.password if credentials else None,
        )
        self._remote = remote
        self._credentials = credentials

    def _http_request(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        data: bytes | Iterator[bytes] | None = None,
        raise_for_status: bool = True,  # noqa: FBT001, FBT002 (dulwich's signature)
    ) -> tuple["HTTPResponse", Callable[[int], bytes]]:
        where = self._remote.display
        try:
            response, read = super()._http_request(url, headers, data, raise_for_status=False)
        except GitProtocolError as error:  # dulwich wraps urllib3's transport errors in it
            raise GitUnavailable(f"{where} is unreachable: {_describe(_root_cause(error))}") from error
        if raise_for_status and response.status != 200:
            response.close()
            raise _http_status_error(response.status, where, self._credentials)
        content_type = response.content_type or ""
        if "/info/refs" in url and not content_type.startswith("application/x-git-"):
            # A login page or a dumb (static) server: dulwich would parse it as a ref list.
            response.close()
            raise GitError(
                f"{where} does not speak git's smart HTTP protocol (Content-Type {content_type!r})"
            )
        return response, read


class _TcpClient(TCPGitClient):
    """Dulwich's git:// client with a socket timeout: its own has none, so a silent server would hang."""

    def __init__(self, host: str, port: int | None, timeout: float, display: str) -> None:
        super().__init__(host, port)
        self._timeout = timeout
        self._display = display

    def _connect(
        self, cmd: bytes, path: str | bytes, protocol_version: int | None = None
    ) -> tuple[Protocol, Callable[[], bool], IO[bytes] | None]:
        # The same request as TCPGitClient._connect, on a socket with a timeout.
        path_bytes = path if isinstance(path, bytes) else path.encode(self._remote_path_encoding)
        connection = socket.create_connection((self._host, self._port), timeout=self._timeout)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = connection.makefile("rb", -1)
        writer = connection.makefile("wb", 0)

        def close() -> None:
            reader.close()
            writer.close()
            connection.close()

        proto = Protocol(reader.read, writer.write, close, report_activity=self._report_activity)
        if path_bytes.startswith(b"/~"):
            path_bytes = path_bytes[1:]
        self.protocol_version = protocol_version or DEFAULT_GIT_PROTOCOL_VERSION_FETCH
        # Version 2 hides behind two NUL bytes, as old servers would choke on more than host=.
        extra = b"\0\0version=%d\0" % self.protocol_version if self.protocol_version == 2 else b""
        proto.send_cmd(b"git-" + cmd, path_bytes, b"host=" + self._host.encode("ascii") + extra)
        return proto, lambda: bool(select.select([connection], [], [], 0)[0]), None
