"""The one git URL parser (servicebuild.giturl), and the CRD's pattern against the same table.

We test these aspects:
- one table of URLs: https and http with and without user information, port, `.git`, trailing slash
  and query; git://; ssh:// with and without user and port; scp-style with and without user; IPv6
  hosts; and what is no git URL (fragments, other schemes, local paths, spaces, non-ASCII, no
  repository path, a malformed host or port);
- each URL taken apart into scheme, user information, host, path and query, and `str()` giving it
  back as written;
- the forms the callers use: for messages (no credentials, no query), for the source label (scp-style
  as ssh://), for BuildKit (HTTP(S) without a trailing slash), the host and port a socket needs,
  the origin an HTTP client needs, SSH or not;
- an error message shows the URL without credentials or query, and the repr shows no credentials;
- the repository key push webhooks are matched by: one table of URLs grouped by the repository they
  name (https, http, git, ssh and scp-style; `.git` and trailing slashes; host and path case; user
  information and query; default, other and SSH ports; IPv6; absolute scp-style paths; subgroups), each
  group with its own key;
- the CRD's `GIT_URL_PATTERN`, read as the API server reads it, and the operator's model admit
  exactly the URLs of the table the parser accepts, but for the deliberate differences named in
  the table (each with its reason, below); generated URLs check the same both ways.
"""

import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from servicebuild.api.models import GIT_URL_PATTERN, GitSource
from servicebuild.giturl import GitUrl, parse_git_url
from support.crd_schema import crd_errors, re2

TOKEN = f"ghp_{secrets.token_hex(12)}"
PASSWORD = f"pw-{secrets.token_hex(8)}"

# Why the CRD decides otherwise than the parser, for the URLs where it does.
CREDENTIALS_IN_HTTP_URL = (
    "the CRD refuses any '@' in an http(s) URL, as credentials belong in the auth secret; the git "
    "gateway still reads such a URL, and never sends or shows what it holds"
)
NOT_DOT_GIT = (
    "BuildKit takes an http(s) URL not ending in .git (or .git/) as a plain HTTP download, so the "
    "CRD refuses it; the parser reads it (the git gateway can list its refs)"
)
NO_REPOSITORY = (
    "the CRD checks the URL's shape, not its parts: it admits a URL with no repository path or no "
    "valid host, which the operator reports as UnsupportedSource"
)


@dataclass(frozen=True)
class Case:
    url: str
    parsed: GitUrl | None
    """None: no git URL, parse_git_url raises ValueError."""
    display: str = ""
    """What messages show of it (parsed URLs only)."""
    crd_differs: str = ""
    """Why the CRD admits it though the parser does not, or the reverse; empty: they agree."""

    @property
    def crd_admits(self) -> bool:
        accepted = self.parsed is not None
        return not accepted if self.crd_differs else accepted


def case(url: str, parsed: GitUrl | None, display: str = "", crd_differs: str = "", name: str = "") -> Any:
    return pytest.param(Case(url, parsed, display, crd_differs), id=name or url)


def https(host: str, path: str, userinfo: str | None = None, query: str | None = None) -> GitUrl:
    return GitUrl("https", host, path, userinfo, query)


CASES = [
    # https and http
    case(
        "https://git.example.com/shop/monorepo.git",
        https("git.example.com", "/shop/monorepo.git"),
        "https://git.example.com/shop/monorepo.git",
    ),
    case(
        "https://git.example.com/shop/monorepo.git/",
        https("git.example.com", "/shop/monorepo.git/"),
        "https://git.example.com/shop/monorepo.git/",
    ),
    case(
        "https://git.example.com:8443/shop/repo.git",
        https("git.example.com:8443", "/shop/repo.git"),
        "https://git.example.com:8443/shop/repo.git",
    ),
    case(
        "http://10.0.0.7:3000/shop/r.git",
        GitUrl("http", "10.0.0.7:3000", "/shop/r.git"),
        "http://10.0.0.7:3000/shop/r.git",
    ),
    case(
        "https://git.example.com/shop/monorepo",
        https("git.example.com", "/shop/monorepo"),
        "https://git.example.com/shop/monorepo",
        NOT_DOT_GIT,
    ),
    case(
        f"https://x-access-token:{TOKEN}@git.example.com/shop/monorepo.git",
        https("git.example.com", "/shop/monorepo.git", f"x-access-token:{TOKEN}"),
        "https://git.example.com/shop/monorepo.git",
        CREDENTIALS_IN_HTTP_URL,
        name="https with a token as password",
    ),
    case(
        f"https://{TOKEN}@git.example.com:8443/shop/repo.git",
        https("git.example.com:8443", "/shop/repo.git", TOKEN),
        "https://git.example.com:8443/shop/repo.git",
        CREDENTIALS_IN_HTTP_URL,
        name="https with a token as user and a port",
    ),
    case(
        f"http://user:{PASSWORD}@with@127.0.0.1:8080/repo.git",
        GitUrl("http", "127.0.0.1:8080", "/repo.git", f"user:{PASSWORD}@with"),
        "http://127.0.0.1:8080/repo.git",
        CREDENTIALS_IN_HTTP_URL,
        name="http with an @ in the password",
    ),
    case(
        "https://user:p%40ss@git.example.com/repo.git",
        https("git.example.com", "/repo.git", "user:p%40ss"),
        "https://git.example.com/repo.git",
        CREDENTIALS_IN_HTTP_URL,
    ),
    case(
        "https://git.example.com/shop/repo@2.git",
        https("git.example.com", "/shop/repo@2.git"),
        "https://git.example.com/shop/repo@2.git",
        CREDENTIALS_IN_HTTP_URL,
    ),
    case(
        f"https://git.example.com/repo.git?private_token={TOKEN}",
        https("git.example.com", "/repo.git", query=f"private_token={TOKEN}"),
        "https://git.example.com/repo.git",
        NOT_DOT_GIT,
        name="https with a token in the query",
    ),
    case(
        "https://git.example.com/repo.git?x=.git",
        https("git.example.com", "/repo.git", query="x=.git"),
        "https://git.example.com/repo.git",
    ),
    # IPv6
    case("https://[::1]:3000/repo.git", https("[::1]:3000", "/repo.git"), "https://[::1]:3000/repo.git"),
    case(
        "https://[2001:db8::7]/shop/repo.git",
        https("[2001:db8::7]", "/shop/repo.git"),
        "https://[2001:db8::7]/shop/repo.git",
    ),
    case(
        "https://user:pw@[::1]:3000/repo.git",
        https("[::1]:3000", "/repo.git", "user:pw"),
        "https://[::1]:3000/repo.git",
        CREDENTIALS_IN_HTTP_URL,
    ),
    case(
        "ssh://git@[fd00::2]:2222/repo.git",
        GitUrl("ssh", "[fd00::2]:2222", "/repo.git", "git"),
        "ssh://[fd00::2]:2222/repo.git",
    ),
    # git://
    case(
        "git://git.example.com/repo.git",
        GitUrl("git", "git.example.com", "/repo.git"),
        "git://git.example.com/repo.git",
    ),
    case(
        "git://git.example.com:9419/shop/repo.git",
        GitUrl("git", "git.example.com:9419", "/shop/repo.git"),
        "git://git.example.com:9419/shop/repo.git",
    ),
    # ssh://
    case(
        "ssh://git@git.example.com:2222/shop/repo.git",
        GitUrl("ssh", "git.example.com:2222", "/shop/repo.git", "git"),
        "ssh://git.example.com:2222/shop/repo.git",
    ),
    case(
        "ssh://git.example.com/shop/repo.git",
        GitUrl("ssh", "git.example.com", "/shop/repo.git"),
        "ssh://git.example.com/shop/repo.git",
    ),
    case(
        "ssh://deploy:hunter2@git.example.com:2222/shop/r.git",
        GitUrl("ssh", "git.example.com:2222", "/shop/r.git", "deploy:hunter2"),
        "ssh://git.example.com:2222/shop/r.git",
    ),
    # scp-style
    case(
        "git@github.com:shop/repo.git",
        GitUrl("scp", "github.com", "shop/repo.git", "git"),
        "github.com:shop/repo.git",
    ),
    case(
        "deploy.bot-1@git.example.com:/srv/git/repo.git",
        GitUrl("scp", "git.example.com", "/srv/git/repo.git", "deploy.bot-1"),
        "git.example.com:/srv/git/repo.git",
    ),
    case(
        ".git@git.example.com:repo",
        GitUrl("scp", "git.example.com", "repo", ".git"),
        "git.example.com:repo",
    ),
    case("github.com:shop/repo.git", None, name="scp-style without a user"),
    case("git@[::1]:repo.git", None, name="scp-style with an IPv6 address"),
    case("git@github.com:", None, name="scp-style without a path"),
    # No git URL
    case("https://git.example.com/repo.git#main:services/checkout", None, name="fragment"),
    case(f"https://user:{PASSWORD}@git.example.com/repo.git#main", None, name="fragment and credentials"),
    case("file:///etc/repo.git", None),
    case("/var/lib/repo.git", None),
    case("./repo.git", None),
    case("repo.git", None),
    case("ftp://host/repo.git", None),
    case("git+ssh://host/repo.git", None),
    case("HTTPS://git.example.com/repo.git", None, name="upper-case scheme"),
    case("https://git.example.com/my repo.git", None, name="space"),
    case("https://git.example.com/r\u00e9po.git", None, name="non-ASCII"),
    case("", None, name="empty"),
    case("https://host", None),
    case("git://git.example.com", None, crd_differs=NO_REPOSITORY),
    case("git://git.example.com/", None, crd_differs=NO_REPOSITORY),
    case("ssh://git@git.example.com", None, crd_differs=NO_REPOSITORY),
    case("ssh://git@git.example.com/", None, crd_differs=NO_REPOSITORY),
    case("https://repo.git", None, crd_differs=NO_REPOSITORY),
    case("https://git.example.com:/repo.git", None, crd_differs=NO_REPOSITORY, name="empty port"),
    case("ssh://git@ho^st/repo.git", None, crd_differs=NO_REPOSITORY, name="malformed host"),
    case("ssh://git@/repo.git", None, crd_differs=NO_REPOSITORY, name="no host"),
]


@pytest.mark.parametrize("case", CASES)
def test_parse(case: Case) -> None:
    if case.parsed is None:
        with pytest.raises(ValueError, match=r"is not an http\(s\), git, ssh or scp-style git URL") as caught:
            parse_git_url(case.url)
        assert TOKEN not in str(caught.value)
        assert PASSWORD not in str(caught.value)
        return
    parsed = parse_git_url(case.url)
    assert parsed == case.parsed
    assert str(parsed) == case.url
    assert parsed.display == case.display


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://user:{PASSWORD}@git.example.com/repo.git#main", "https://git.example.com/repo.git#main"),
        (f"ftp://user:{PASSWORD}@host/repo.git?token={TOKEN}", "ftp://host/repo.git"),
        (f"git+ssh://{TOKEN}@host/repo.git", "git+ssh://host/repo.git"),
        (f"deploy:{PASSWORD}@host:repo.git", "host:repo.git"),
        ("github.com:shop/repo.git", "github.com:shop/repo.git"),
    ],
)
def test_an_error_shows_the_url_without_credentials(url: str, shown: str) -> None:
    with pytest.raises(ValueError, match="is not an") as caught:
        parse_git_url(url)
    assert str(caught.value) == f"{shown!r} is not an http(s), git, ssh or scp-style git URL"


@pytest.mark.parametrize("case", CASES)
def test_the_crd_and_the_model_admit_the_same_urls(case: Case) -> None:
    assert (crd_errors(servicebuild(case.url)) == []) is case.crd_admits
    try:
        GitSource(url=case.url)
    except ValidationError:
        assert not case.crd_admits
    else:
        assert case.crd_admits


def servicebuild(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "servicebuild.dev/v1alpha1",
        "kind": "ServiceBuild",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"source": {"git": {"url": url}}, "output": {"image": "registry.example.com/shop/checkout"}},
    }


@pytest.mark.parametrize(
    ("url", "public", "buildkit_url"),
    [
        (
            "https://git.example.com/shop/monorepo.git",
            "https://git.example.com/shop/monorepo.git",
            "https://git.example.com/shop/monorepo.git",
        ),
        (
            "https://git.example.com/shop/monorepo.git/",
            "https://git.example.com/shop/monorepo.git",
            "https://git.example.com/shop/monorepo.git",
        ),
        (
            f"https://{TOKEN}@git.example.com/repo.git/",
            "https://git.example.com/repo.git",
            f"https://{TOKEN}@git.example.com/repo.git",
        ),
        (
            "ssh://deploy:hunter2@git.example.com:2222/shop/r.git",
            "ssh://git.example.com:2222/shop/r.git",
            "ssh://deploy:hunter2@git.example.com:2222/shop/r.git",
        ),
        (
            "ssh://git@git.example.com/r.git/",
            "ssh://git.example.com/r.git/",
            "ssh://git@git.example.com/r.git/",
        ),
        ("git://git.example.com/r.git", "git://git.example.com/r.git", "git://git.example.com/r.git"),
        (
            "git@git.example.com:shop/r.git",
            "ssh://git.example.com/shop/r.git",
            "git@git.example.com:shop/r.git",
        ),
        ("git@git.example.com:/r.git", "ssh://git.example.com/r.git", "git@git.example.com:/r.git"),
    ],
)
def test_the_label_and_buildkit_forms(url: str, public: str, buildkit_url: str) -> None:
    parsed = parse_git_url(url)
    assert parsed.public == public
    assert parsed.buildkit_url == buildkit_url


@pytest.mark.parametrize(
    ("url", "hostname", "port", "origin", "ssh"),
    [
        ("https://git.example.com/r.git", "git.example.com", None, "https://git.example.com", False),
        ("http://u:p@127.0.0.1:8080/r.git", "127.0.0.1", 8080, "http://127.0.0.1:8080", False),
        ("https://[::1]:3000/r.git", "::1", 3000, "https://[::1]:3000", False),
        ("git://[2001:db8::7]/r.git", "2001:db8::7", None, "git://[2001:db8::7]", False),
        ("git://git.example.com:9419/r.git", "git.example.com", 9419, "git://git.example.com:9419", False),
        ("ssh://git@git.example.com:2222/r.git", "git.example.com", 2222, "ssh://git.example.com:2222", True),
        ("git@github.com:shop/r.git", "github.com", None, "ssh://github.com", True),
    ],
)
def test_where_clients_connect(url: str, hostname: str, port: int | None, origin: str, ssh: bool) -> None:
    parsed = parse_git_url(url)
    assert (parsed.hostname, parsed.port, parsed.origin, parsed.is_ssh) == (hostname, port, origin, ssh)


REPOSITORY_KEYS = {
    "github.com/shop/api": [
        "https://github.com/Shop/API.git",
        "https://GitHub.com/Shop/API.git",
        "https://github.com/Shop/API",
        "https://github.com/Shop/API/",
        "https://github.com/shop/api.git/",
        "https://github.com:443/Shop/API.git",
        "http://github.com/Shop/API.git",
        "http://github.com:80/Shop/API.git",
        f"https://x-access-token:{TOKEN}@github.com/Shop/API.git",
        f"https://github.com/Shop/API.git?private_token={TOKEN}",
        "git://github.com/Shop/API.git",
        "git://github.com:9418/Shop/API.git",
        "git@github.com:Shop/API.git",
        "git@GITHUB.COM:shop/api",
        "git@github.com:/Shop/API.git",
        "ssh://git@github.com/Shop/API",
        "ssh://git@github.com:22/Shop/API.git",
        "ssh://git@github.com:2222/Shop/API.git",
        "ssh://github.com/Shop/API.git/",
    ],
    "github.com/shop/api-v2": ["https://github.com/shop/api-v2.git", "git@github.com:shop/api-v2.git"],
    "github.com/other/api": ["https://github.com/other/api.git"],
    "github.com/api": ["https://github.com/api.git"],
    "gitlab.com/shop/api": ["https://gitlab.com/shop/api.git", "git@gitlab.com:shop/api.git"],
    "gitlab.example.com/shop/backend/api": [
        "https://gitlab.example.com/shop/backend/api.git",
        "ssh://git@gitlab.example.com:2222/shop/backend/api.git",
        "git@gitlab.example.com:shop/backend/api.git",
    ],
    "git.example.com:8443/shop/api": [
        "https://git.example.com:8443/shop/api.git",
        "http://git.example.com:8443/shop/api",
    ],
    "git.example.com:9419/shop/api": ["git://git.example.com:9419/shop/api.git"],
    "git.example.com/srv/git/api": [
        "deploy@git.example.com:/srv/git/api.git",
        "ssh://git.example.com/srv/git/api.git",
        "https://git.example.com/srv/git/api.git",
    ],
    "[::1]:3000/repo": ["https://[::1]:3000/repo.git", "http://[::1]:3000/Repo"],
    "[2001:db8::7]/shop/api": [
        "https://[2001:DB8::7]/shop/api.git",
        "ssh://git@[2001:db8::7]:2222/shop/api.git",
    ],
    "10.0.0.7:3000/shop/r": ["http://10.0.0.7:3000/shop/r.git"],
}
"""Each repository key, with the URLs that name that repository: the keys differ, so URLs of different
groups never match."""


@pytest.mark.parametrize(
    ("url", "key"), [pytest.param(url, key, id=url) for key, urls in REPOSITORY_KEYS.items() for url in urls]
)
def test_the_repository_key(url: str, key: str) -> None:
    assert parse_git_url(url).repository_key == key


def test_the_repr_shows_no_credentials() -> None:
    parsed = parse_git_url(f"https://user:{PASSWORD}@git.example.com/repo.git?private_token={TOKEN}")
    for text in (repr(parsed), repr([parsed]), f"{parsed!r}"):
        assert PASSWORD not in text
        assert TOKEN not in text
    assert repr(parsed) == "GitUrl('https://git.example.com/repo.git')"


# ---------------------------------------------------------------------------------------------
# Generated URLs: what the CRD admits, the parser reads back as written or refuses; what the parser
# accepts, the CRD admits but for the table's deliberate differences.


@given(st.from_regex(re2(GIT_URL_PATTERN)))
def test_a_url_the_crd_admits_is_read_back_as_written_or_refused(url: str) -> None:
    try:
        parsed = parse_git_url(url)
    except ValueError:
        return
    assert str(parsed) == url


_NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
_HOSTS = st.one_of(_NAME, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"))
_PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}"))
_SEGMENTS = st.lists(st.from_regex(r"[A-Za-z0-9._~%@+-]{1,8}", fullmatch=True), min_size=1, max_size=3)
_USERS = st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9_.-]{1,8}(:[A-Za-z0-9@%]{1,8})?@", fullmatch=True))


@st.composite
def git_urls(draw: st.DrawFn) -> str:
    path = "/".join(draw(_SEGMENTS))
    if draw(st.booleans()):
        return f"{draw(st.from_regex(r'[A-Za-z0-9_.-]{1,8}', fullmatch=True))}@{draw(_NAME)}:{path}"
    scheme = draw(st.sampled_from(["https", "http", "git", "ssh"]))
    suffix = draw(st.sampled_from(["", ".git", ".git/", "/"]))
    query = draw(st.one_of(st.just(""), st.from_regex(r"\?[a-z=&.]{0,8}", fullmatch=True)))
    return f"{scheme}://{draw(_USERS)}{draw(_HOSTS)}{draw(_PORTS)}/{path}{suffix}{query}"


@given(git_urls())
def test_a_url_the_parser_accepts_the_crd_admits_but_for_the_deliberate_differences(url: str) -> None:
    parsed = parse_git_url(url)
    assert str(parsed) == url
    http = parsed.scheme in {"http", "https"}
    differs = http and ("@" in url or not url.endswith((".git", ".git/")))
    assert bool(re2(GIT_URL_PATTERN).search(url)) is not differs
