"""Real git repositories for tests, served by git itself on loopback ports.

`create_repositories` makes them with the git CLI: `repo.git` (two commits on `main`, a branch
`feature`, a branch `release/1.x`, a lightweight and an annotated tag) and `empty.git` (no commit).
The expected ids come from `git rev-parse`, so tests compare against git, not against our reading.

`create_repository` adds a repository of given files (`commit_files` commits a change to it), for tests
that build a context from git; each test names its own.

`start_git_server` serves them over the smart HTTP protocol: `git http-backend` (CGI) behind a
small HTTP server that checks a token with basic auth, as GitHub and GitLab do; with protocol v2 it
allows partial clones (`uploadpack.allowFilter`) unless told not to. `start_git_daemon` serves them over
git:// with `git daemon`. Both need the `git` package (Debian: apt-get install git).
"""

import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .oci_registry import basic_credentials, free_port
from .processes import stop_process

GIT = "/usr/bin/git"

REPOSITORY = "repo.git"
EMPTY_REPOSITORY = "empty.git"
DEFAULT_BRANCH = "main"
BRANCH = "feature"
NESTED_BRANCH = "release/1.x"
LIGHTWEIGHT_TAG = "v1.0"
ANNOTATED_TAG = "v1.1"


@dataclass(frozen=True)
class RepoCommits:
    """What git says the refs of `repo.git` point to."""

    main: str
    """The tip of `main`, which HEAD names."""
    first: str
    """The first commit of `main`; `v1.0` (lightweight) and `release/1.x` point to it."""
    feature: str
    """The tip of `feature`, one commit on top of `first`; `v1.1` (annotated) tags it."""
    annotated_tag_object: str
    """The id of the tag object `v1.1` itself, which is not a commit."""


@dataclass(frozen=True)
class GitRepositories:
    root: Path
    commits: RepoCommits


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git isolated from the machine's and the user's configuration; return its stdout."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd or Path.cwd()),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
    }
    done = subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


def create_repositories(root: Path) -> GitRepositories:
    """Create `root/repo.git` and `root/empty.git` (bare, as a server keeps them)."""
    work = root / "work"
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch", DEFAULT_BRANCH, cwd=work)
    (work / "Dockerfile").write_text("FROM scratch\nCOPY app /app\n")
    (work / "app").write_text("version 1\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    git("tag", LIGHTWEIGHT_TAG, cwd=work)
    git("branch", NESTED_BRANCH, cwd=work)
    git("checkout", "--quiet", "-b", BRANCH, cwd=work)
    (work / "app").write_text("version 1, feature\n")
    git("commit", "--quiet", "-am", "feature", cwd=work)
    git("tag", "-a", ANNOTATED_TAG, "-m", "release 1.1", cwd=work)
    git("checkout", "--quiet", DEFAULT_BRANCH, cwd=work)
    (work / "app").write_text("version 2\n")
    git("commit", "--quiet", "-am", "second", cwd=work)
    git("clone", "--quiet", "--bare", str(work), str(root / REPOSITORY), cwd=root)
    git("init", "--quiet", "--bare", "-b", DEFAULT_BRANCH, str(root / EMPTY_REPOSITORY), cwd=root)
    bare = root / REPOSITORY
    commits = RepoCommits(
        main=git("rev-parse", "HEAD", cwd=bare),
        first=git("rev-parse", f"refs/tags/{LIGHTWEIGHT_TAG}", cwd=bare),
        feature=git("rev-parse", f"refs/heads/{BRANCH}", cwd=bare),
        annotated_tag_object=git("rev-parse", f"refs/tags/{ANNOTATED_TAG}", cwd=bare),
    )
    if git("rev-parse", f"refs/tags/{ANNOTATED_TAG}^{{commit}}", cwd=bare) != commits.feature:
        raise RuntimeError("the annotated tag does not point to the feature commit")
    return GitRepositories(root, commits)


def push_commit(repositories: GitRepositories, branch: str, content: str) -> str:
    """Commit `content` as `app` on `branch` of `repo.git` (made from `main` if new) and push it, as a
    developer would; return the commit id."""
    work = repositories.root / f"work-{branch.replace('/', '-')}"
    if not work.exists():
        git("clone", "--quiet", str(repositories.root / REPOSITORY), str(work), cwd=repositories.root)
        git("checkout", "--quiet", "-B", branch, cwd=work)
    (work / "app").write_text(content)
    git("commit", "--quiet", "--allow-empty", "-am", content, cwd=work)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def create_repository(repositories: GitRepositories, name: str, files: dict[str, str]) -> str:
    """A bare repository `name` (e.g. `checkout.git`) under the served root whose `main` holds `files`;
    return the commit id."""
    work = repositories.root / f"work-{name}"
    work.mkdir()
    git("init", "--quiet", "--initial-branch", DEFAULT_BRANCH, cwd=work)
    git(
        "init",
        "--quiet",
        "--bare",
        "-b",
        DEFAULT_BRANCH,
        str(repositories.root / name),
        cwd=repositories.root,
    )
    git("remote", "add", "origin", str(repositories.root / name), cwd=work)
    return commit_files(repositories, name, files)


def commit_files(repositories: GitRepositories, name: str, files: dict[str, str]) -> str:
    """Write `files` into repository `name` (made by `create_repository`), commit and push them to `main`
    as a developer would; return the commit id."""
    work = repositories.root / f"work-{name}"
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", f"change {', '.join(files)}", cwd=work)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{DEFAULT_BRANCH}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


class _ServesRepositories:
    """What both servers share: `repo.git`'s URL and commits, given the server's base URL."""

    repositories: GitRepositories

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"{self.base_url}/{REPOSITORY}"

    @property
    def commits(self) -> RepoCommits:
        return self.repositories.commits

    def repository_url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


# ---------------------------------------------------------------------------------------------
# Smart HTTP: git http-backend behind basic auth


@dataclass
class GitHttpServer(_ServesRepositories):
    """An HTTP git server on 127.0.0.1; `url` is `repo.git`'s. `token=None` serves anonymously."""

    repositories: GitRepositories
    token: str | None
    protocol_v2: bool
    answer_status: int | None = None
    """When set, every request gets this HTTP status (an outage, a proxy denying access)."""
    login_page: bool = False
    """When set, every request gets 200 with an HTML page, as from a single sign-on proxy."""
    moved: dict[str, str] = field(default_factory=dict)
    """Renamed repositories: a request under `/<old>/` is redirected (301) to `/<new>/`, as hosts do;
    `<new>` may be an absolute URL, on another server."""
    usernames: list[str | None] = field(default_factory=list)
    """The basic-auth username of each request that passed the token check (None: anonymous)."""
    lookups: list[str | None] = field(default_factory=list)
    """Each ref listing (`GET …/info/refs`, the start of `git ls-remote` or a fetch), by the username
    it came with."""
    allow_filter: bool = True
    """Whether `git upload-pack` offers partial clones (`uploadpack.allowFilter`), as GitHub and GitLab do."""
    fetches: list[bytes] = field(default_factory=list)
    """The body of each protocol v2 `fetch` command: what a client asked objects with."""
    fetchers: list[str | None] = field(default_factory=list)
    """Each `fetch` command's username; a fetch lists refs first, so `lookups` counts it too."""
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHttpHandler)
        self._server.git_server = self  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _GitHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real git hosts; every answer has a length

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner: GitHttpServer = self.server.git_server  # type: ignore[attr-defined]
        body = self._request_body()
        if owner.answer_status is not None:
            self._answer(owner.answer_status, {}, b"switched off\n")
            return
        if owner.login_page:
            self._answer(200, {"Content-Type": "text/html; charset=utf-8"}, b"<html>Sign in</html>\n")
            return
        old, slash, rest = self.path.lstrip("/").partition("/")
        if old in owner.moved:
            new = owner.moved[old]
            self._answer(301, {"Location": f"{'' if '://' in new else '/'}{new}{slash}{rest}"}, b"")
            return
        username, password = basic_credentials(self.headers.get("Authorization", ""))
        if owner.token is not None and password != owner.token:
            self._answer(401, {"WWW-Authenticate": 'Basic realm="git"'}, b"authentication required\n")
            return
        owner.usernames.append(username)
        if body[4:18] == b"command=fetch\n":
            owner.fetches.append(body)
            owner.fetchers.append(username)
        if self.command == "GET" and urllib.parse.urlsplit(self.path).path.endswith("/info/refs"):
            owner.lookups.append(username)
        self._run_backend(owner, body, username)

    def _run_backend(self, owner: GitHttpServer, body: bytes, username: str | None) -> None:
        url = urllib.parse.urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(owner.repositories.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(url.path),
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": username or "",
        }
        # What Apache's `SetEnvIf Git-Protocol` does for git's docs: without it, protocol v0/v1.
        if owner.protocol_v2 and self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if owner.allow_filter:
            env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "uploadpack.allowFilter"}
            env["GIT_CONFIG_VALUE_0"] = "true"
        done = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, separator, content = done.stdout.partition(b"\r\n\r\n")
        if not separator:
            head, _, content = done.stdout.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        self._answer(status, headers, content)

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Keep test output quiet."""


def start_git_server(
    repositories: GitRepositories,
    *,
    token: str | None = None,
    protocol_v2: bool = True,
    allow_filter: bool = True,
) -> GitHttpServer:
    """Serve `repositories` over smart HTTP on a free loopback port.

    With a `token`, every request needs basic auth with it as the password (any username), and
    gets 401 otherwise. `protocol_v2=False` makes the server speak only protocol v0/v1;
    `allow_filter=False` makes it refuse partial clones, as git does by default.
    """
    server = GitHttpServer(repositories, token, protocol_v2, allow_filter=allow_filter)
    server.start()
    return server


def new_token() -> str:
    return f"gittok_{secrets.token_hex(16)}"


# ---------------------------------------------------------------------------------------------
# git:// with git daemon


@dataclass
class GitDaemon(_ServesRepositories):
    """`git daemon` on 127.0.0.1 serving every repository under the root, anonymously."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    repositories: GitRepositories

    @property
    def base_url(self) -> str:
        return f"git://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def start_git_daemon(repositories: GitRepositories, log_dir: Path) -> GitDaemon:
    """Start `git daemon` on a free loopback port; `--informative-errors` names unknown repositories."""
    port = free_port()
    root = str(repositories.root)
    log_path = log_dir / "git-daemon.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": root,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                GIT,
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                f"--base-path={root}",
                "--listen=127.0.0.1",
                f"--port={port}",
                root,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    daemon = GitDaemon(port, process, log_path, repositories)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"git daemon exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return daemon
    daemon.stop()
    raise RuntimeError(f"git daemon did not listen within 15s:\n{log_path.read_text()}")
