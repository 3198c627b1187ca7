"""Git remote URLs, parsed once for every part of the operator that reads one. Pure.

The forms are those BuildKit takes as a git context (`frontend/dockerui/context.go` `DetectGitContext`):
`https://`, `http://`, `git://`, `ssh://` and scp-style `user@host:path`. The CRD's `GIT_URL_PATTERN`
(api/models.py), which the API server enforces, admits the same URLs but for the differences
tests/unit/test_giturl.py lists beside its table of cases: that table runs through both.

Only printable ASCII is a URL here, and never `#`: BuildKit reads what follows a `#` as the ref and
folder to build (`util/gitutil/git_url.go`), and the renderer appends its own.
"""

import re
from dataclasses import dataclass, replace
from typing import Literal, cast

Scheme = Literal["https", "http", "git", "ssh", "scp"]
"""`scp` is the scp-style `user@host:path`, which git reaches over SSH."""

# Character classes spelled out as ranges of printable ASCII (`!`..`~`), like the CRD's pattern:
# _ANY has all but `#`, _USERINFO all but `#`, `/` and `?`, _PATH all but `#` and `?`.
_ANY = r'[!-"$-~]'
_USERINFO = r'[!-"$-.0->@-~]'
_PATH = r'[!-"$->@-~]'
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+"
"""An IPv6 address in brackets, or a registered name (RFC 3986: unreserved, percent-encoded, sub-delims)."""

# The userinfo ends at the authority's last `@`: a password may hold an unescaped one.
_SCHEME_URL_RE = re.compile(
    rf"(?P<scheme>https|http|git|ssh)://(?:(?P<userinfo>{_USERINFO}*)@)?"
    rf"(?P<host>(?:{_HOST})(?::[0-9]+)?)(?P<path>/{_PATH}*)?(?:\?(?P<query>{_ANY}*))?"
)
# BuildKit's `sshutil.IsImplicitSSHTransport` wants the user too; the CRD has the same classes.
_SCP_URL_RE = re.compile(rf"(?P<userinfo>[A-Za-z0-9_.-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>{_ANY}+)")
_FULL_COMMIT_RE = re.compile(r"[0-9a-fA-F]{40}")
_REDACTED_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://|)(?:[^/]*@)?(?P<rest>[^?]*).*", re.DOTALL)
_DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418}


@dataclass(frozen=True, repr=False)
class GitUrl:
    """A git remote URL taken apart; `str()` gives it back as written. The repr shows no credentials."""

    scheme: Scheme
    host: str
    """`host[:port]` as written, an IPv6 address in brackets: Go's `url.Parse(url).Host`, the host BuildKit
    scopes the session secret `GIT_AUTH_TOKEN.<host>` to (`source/git/source.go`)."""
    path: str
    """From the first `/` up to the query; for scp-style, all that follows the colon (a `?` included)."""
    userinfo: str | None = None
    """The user, maybe with a password, before the `@`: never in `display` or `public`."""
    query: str | None = None
    """What follows the `?` of an http, https, git or ssh URL."""

    def __str__(self) -> str:
        userinfo = "" if self.userinfo is None else f"{self.userinfo}@"
        if self.scheme == "scp":
            return f"{userinfo}{self.host}:{self.path}"
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{userinfo}{self.host}{self.path}{query}"

    def __repr__(self) -> str:
        return f"GitUrl({self.display!r})"

    @property
    def display(self) -> str:
        """The URL fit for messages: no user information (credentials), no query."""
        if self.scheme == "scp":
            return f"{self.host}:{self.path}"
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def public(self) -> str:
        """The URL for the `org.opencontainers.image.source` label: `buildkit_url` without user information;
        scp-style `git@host:org/repo.git` becomes `ssh://host/org/repo.git`."""
        if self.scheme == "scp":
            return f"ssh://{self.host}/{self.path.removeprefix('/')}"
        return str(replace(self._as_buildkit_reads_it(), userinfo=None))

    @property
    def buildkit_url(self) -> str:
        """The URL as BuildKit must get it: an HTTP(S) URL names a git repository only when its path ends in
        `.git` (`frontend/dockerfile/dfgitutil/git_ref.go`); `repo.git/` would be downloaded as a plain
        HTTP context, so the trailing slash goes. Other URLs go as written."""
        return str(self._as_buildkit_reads_it())

    def _as_buildkit_reads_it(self) -> "GitUrl":
        if self.scheme in {"http", "https"}:
            return replace(self, path=self.path.removesuffix("/"))
        return self

    @property
    def is_ssh(self) -> bool:
        """Reached over SSH: `ssh://` or scp-style."""
        return self.scheme in {"ssh", "scp"}

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` without user information: where an HTTP client sends its requests."""
        return f"{'ssh' if self.scheme == 'scp' else self.scheme}://{self.host}"

    @property
    def hostname(self) -> str:
        """The host without its port, an IPv6 address without brackets: what a socket connects to."""
        return self._host_and_port()[0]

    @property
    def port(self) -> int | None:
        """The port written in the URL, if any."""
        return self._host_and_port()[1]

    @property
    def repository_key(self) -> str:
        """Which repository the URL names, whatever its form, for finding the ServiceBuilds a push webhook
        concerns: `host[:port]/path`, lower-cased, without user information or query, without the path's
        leading and trailing `/` and its `.git` suffix. `https://GitHub.com/Shop/API.git`,
        `git@github.com:Shop/API.git` and `ssh://git@github.com/Shop/API` are all `github.com/shop/api`.

        The scheme does not count: git servers serve one repository over HTTP(S), SSH and git alike. Nor
        does an SSH port: scp-style URLs cannot write one, and servers often listen for SSH on another port
        than 22 while their URLs for HTTPS do not name one. An HTTP(S) or git port other than the scheme's
        default does count: it may be another server on the same host. The path is compared without
        case: GitHub, GitLab, Gitea and Bitbucket look repositories up regardless of case, and users write
        `shop/api` for `Shop/API`.

        Loose on purpose: a match is a reason to resolve the ServiceBuild's revision again, which asks the
        git server for the commit, so a false match costs one request and a missed one a late build. Two
        URLs with the same key may still name different repositories (on a case-sensitive server, or on two
        SSH ports): never share what was resolved for one URL with another by this key."""
        address = self.hostname.lower()
        host = f"[{address}]" if ":" in address else address
        default_port = _DEFAULT_PORTS.get(self.scheme)
        if default_port is not None and self.port not in {None, default_port}:
            host = f"{host}:{self.port}"
        path = self.path.lower().strip("/").removesuffix(".git").rstrip("/")
        return f"{host}/{path}"

    def _host_and_port(self) -> tuple[str, int | None]:
        if self.host.startswith("["):
            address, _, port = self.host[1:].partition("]")
            port = port.removeprefix(":")
        else:
            address, _, port = self.host.partition(":")
        return address, int(port) if port else None


def parse_git_url(url: str) -> GitUrl:
    """`url` taken apart, or ValueError when it is no git URL BuildKit reads (the message hides credentials).

    An http, https, git or ssh URL needs a repository path (more than `/`).
    """
    scheme_url = _SCHEME_URL_RE.fullmatch(url)
    if scheme_url is not None and len(scheme_url["path"] or "") > 1:
        scheme = cast("Scheme", scheme_url["scheme"])
        return GitUrl(
            scheme, scheme_url["host"], scheme_url["path"], scheme_url["userinfo"], scheme_url["query"]
        )
    scp = _SCP_URL_RE.fullmatch(url)
    if scp is not None:
        return GitUrl("scp", scp["host"], scp["path"], scp["userinfo"])
    raise ValueError(f"{_redacted(url)!r} is not an http(s), git, ssh or scp-style git URL")


def _redacted(text: str) -> str:
    """Best effort for a string that is no git URL: what an error message may show of it (no user
    information up to the last `@` before the first `/`, nothing from a `?` on: a query may hold a token)."""
    return _REDACTED_RE.sub(r"\g<scheme>\g<rest>", text, count=1)


def is_full_commit(revision: str) -> bool:
    """A full (40 hex digit) commit id, as opposed to a branch, tag or abbreviated id."""
    return bool(_FULL_COMMIT_RE.fullmatch(revision))
