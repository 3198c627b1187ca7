"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a loopback port.

`start_registry` runs it without auth, with htpasswd (Basic) auth, or with token (Bearer) auth
backed by `TokenServer`, a tiny token service in the test process. `push_image` and `push_index`
upload real blobs and manifests the way BuildKit does (an index with BuildKit's attestation manifests
of in-toto statements), and return what the registry must serve.
"""

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .processes import stop_process

REGISTRY_BINARY = "/usr/bin/docker-registry"  # apt-get install docker-registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"


# ---------------------------------------------------------------------------------------------
# The token service (Bearer auth)


class TokenServer:
    """A token service as the distribution token spec describes: Basic credentials in, JWT out.

    Valid credentials get every action they ask for; no credentials get a token with no access
    (a private registry); wrong credentials get 401. `requests` records each token request as
    `(username or None, scopes)` so tests can see what a client asked for.
    """

    def __init__(self, tmp_path: Path, users: dict[str, str], *, service: str = "test-registry") -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = "test-token-issuer"
        self.requests: list[tuple[str | None, list[str]]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._certificate = _self_signed_certificate(self._key)
        self.cert_path = tmp_path / "token-signing.pem"
        self.cert_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
        self._server.token_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def mint(self, scopes: list[str], subject: str = "") -> str:
        """A signed token granting `scopes` (`repository:<name>:<action>,...`)."""
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            # distribution verifies x5c against the rootcertbundle, so no libtrust key id is needed.
            "x5c": [base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [_access(scope) for scope in scopes],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _TokenHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        owner: TokenServer = self.server.token_server  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = query.get("scope", [])
        username, password = basic_credentials(self.headers.get("Authorization", ""))
        owner.requests.append((username, scopes))
        if url.path != "/token" or query.get("service") != [owner.service]:
            self._answer(400, {"details": "unknown service"})
        elif username is not None and owner.users.get(username) != password:
            self._answer(401, {"details": "invalid credentials"})
        else:
            token = owner.mint(scopes if username is not None else [], subject=username or "")
            self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Keep test output quiet."""


def basic_credentials(header: str) -> tuple[str | None, str | None]:
    """(username, password) of a basic `Authorization` header; (None, None) for any other."""
    if not header.lower().startswith("basic "):
        return None, None
    username, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return username, password


def _access(scope: str) -> dict[str, Any]:
    kind, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": kind, "name": name, "actions": actions.split(",")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _self_signed_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


# ---------------------------------------------------------------------------------------------
# The registry process


@dataclass
class RunningRegistry:
    """A registry process; `host` is what image references use (`127.0.0.1:PORT`)."""

    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    credentials: tuple[str, str] | None = None
    """Username and password accepted by an htpasswd or token registry."""
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push_headers(self, repository: str) -> dict[str, str]:
        """Headers that let a test push to (and pull from) `repository`, whatever the auth."""
        if self.token_server is not None:
            return {
                "Authorization": f"Bearer {self.token_server.mint([f'repository:{repository}:pull,push'])}"
            }
        if self.credentials is not None:
            return {"Authorization": _basic_header(*self.credentials)}
        return {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        if self.token_server is not None:
            self.token_server.stop()


def start_registry(
    tmp_path: Path,
    *,
    htpasswd: tuple[str, str] | None = None,
    token_users: dict[str, str] | None = None,
) -> RunningRegistry:
    """Start `docker-registry serve` on a free loopback port, storing blobs under `tmp_path`.

    `htpasswd=(user, password)` turns on Basic auth; `token_users={user: password}` turns on
    token auth with a `TokenServer` that accepts those users. Waits until `GET /v2/` answers.
    """
    host = f"127.0.0.1:{free_port()}"
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": host, "secret": secrets.token_hex(16)},
    }
    credentials, token_server = None, None
    if htpasswd is not None:
        credentials = htpasswd
        user, password = htpasswd
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()  # low cost: tests
        (tmp_path / "htpasswd").write_text(f"{user}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(tmp_path / "htpasswd")}}
    elif token_users is not None:
        credentials = next(iter(token_users.items()))
        token_server = TokenServer(tmp_path, token_users)
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(token_server.cert_path),
            }
        }
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT
        )
    registry = RunningRegistry(host, process, log_path, credentials, token_server)
    try:
        _wait_until_serving(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(registry: RunningRegistry, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with {registry.process.returncode}:\n{registry.log()}"
            )
        try:
            httpx.get(f"{registry.url}/v2/", timeout=1.0)  # 200, or 401 when auth is on
        except httpx.TransportError:
            time.sleep(0.05)
        else:
            return
    raise RuntimeError(f"docker-registry did not answer within {timeout}s:\n{registry.log()}")


# ---------------------------------------------------------------------------------------------
# Pushing images


@dataclass(frozen=True)
class PushedImage:
    repository: str
    reference: str
    """The tag, or the digest for a manifest pushed only by digest (an index's platforms)."""
    digest: str
    """As the registry answered in `Docker-Content-Digest`."""
    media_type: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    config_size: int
    layer_sizes: tuple[int, ...]

    @property
    def size_bytes(self) -> int:
        return self.config_size + sum(self.layer_sizes)

    @property
    def layers(self) -> int:
        return len(self.layer_sizes)


@dataclass(frozen=True)
class PushedIndex:
    repository: str
    tag: str
    digest: str
    index: dict[str, Any]
    platforms: dict[str, PushedImage] = field(default_factory=dict)
    attestation: PushedImage | None = None
    """The first platform's attestation manifest."""
    attestations: dict[str, PushedImage] = field(default_factory=dict)
    """Per platform, the attestation manifest describing its image."""

    @property
    def manifest_size(self) -> int:
        """The index document's own size, as its descriptor gives it."""
        return len(_canonical(self.index))

    @property
    def size_bytes(self) -> int:
        """What an image's size is: the platforms' images, without the attestation."""
        return sum(image.size_bytes for image in self.platforms.values())


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A real, reproducible gzipped tar of `files`: a layer blob as BuildKit would push it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def push_image(
    registry: RunningRegistry | str,
    repository: str,
    tag: str | None,
    layers: list[bytes],
    *,
    auth: tuple[str, str] | None = None,
    token: str | None = None,
    media_type: str = OCI_MANIFEST,
    platform: str = "linux/amd64",
    history: list[dict[str, Any]] | None = None,
) -> PushedImage:
    """Upload `layers` (gzipped tars, see `tar_gz`), an image config and a manifest; tag it.

    `registry` is a `RunningRegistry` (its own credentials are used) or a URL or `host:port`
    with `auth` (Basic) or `token` (Bearer). With `tag=None` the manifest is put by digest. `history`
    is the config's, as BuildKit writes it (see `buildkit_history`).
    """
    with _client(registry, repository, auth, token) as client:
        return _push_image(
            client, repository, tag, layers, media_type=media_type, platform=platform, history=history
        )


SLSA_PROVENANCE = "https://slsa.dev/provenance/v0.2"
SPDX_SBOM = "https://spdx.dev/Document"


def push_index(
    registry: RunningRegistry | str,
    repository: str,
    tag: str | None,
    *,
    auth: tuple[str, str] | None = None,
    token: str | None = None,
    images: dict[str, list[bytes]] | None = None,
    history: list[dict[str, Any]] | None = None,
    predicates: tuple[str, ...] = (SLSA_PROVENANCE,),
) -> PushedIndex:
    """Push an image per platform (with `history` in each config, see `buildkit_history`) and, as BuildKit
    does, an attestation manifest per platform holding one in-toto statement per predicate type, all in one
    OCI index; with `tag=None` the index is put by digest.

    `images` maps each platform to its layers; default: linux/amd64 and linux/arm64 images of two layers
    and their own sizes. No `predicates`: an index of the images alone.
    """
    images = images or {
        platform: [
            tar_gz({"app": f"{platform} binary ".encode() * (100 * (number + 1))}),
            tar_gz({"etc/os": b"x"}),
        ]
        for number, platform in enumerate(("linux/amd64", "linux/arm64"))
    }
    with _client(registry, repository, auth, token) as client:
        platforms = {
            platform: _push_image(client, repository, None, layers, platform=platform, history=history)
            for platform, layers in images.items()
        }
        attestations = {
            platform: _push_attestation(client, repository, image, predicates)
            for platform, image in platforms.items()
            if predicates
        }
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                *(_descriptor(image, platform) for platform, image in platforms.items()),
                *(
                    _descriptor(attestation, "unknown/unknown")
                    | {
                        "annotations": {
                            "vnd.docker.reference.digest": platforms[platform].digest,
                            "vnd.docker.reference.type": "attestation-manifest",
                        }
                    }
                    for platform, attestation in attestations.items()
                ),
            ],
        }
        body = _canonical(index)
        digest = _put_manifest(client, repository, tag, body, OCI_INDEX)
        first = next(iter(attestations.values()), None)
        return PushedIndex(repository, tag, digest, index, platforms, first, attestations)


def _push_attestation(
    client: httpx.Client, repository: str, subject: PushedImage, predicates: tuple[str, ...]
) -> PushedImage:
    """BuildKit's attestation manifest for `subject`: platform unknown/unknown, one in-toto statement
    layer per predicate type, each annotated with it (`in-toto.io/predicate-type`)."""
    statements = [
        _canonical(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": predicate,
                "subject": [{"name": f"pkg:docker/{repository}", "digest": {"sha256": subject.digest[7:]}}],
                "predicate": {"pad": "p" * 50_000},
            }
        )
        for predicate in predicates
    ]
    return _push_image(
        client,
        repository,
        None,
        statements,
        platform="unknown/unknown",
        layer_media_type=IN_TOTO,
        layer_annotations=[{"in-toto.io/predicate-type": predicate} for predicate in predicates],
    )


_LAYERED = frozenset({"ADD", "COPY", "RUN"})


def buildkit_history(dockerfile: str, layers: int) -> list[dict[str, Any]]:
    """The config history BuildKit writes for the last stage of a simple Dockerfile (one instruction a
    line) in an image of `layers` layers: `--from=` dropped, `RUN` through the shell, `# buildkit` after
    the instructions that made a layer, and entries of the base image for the layers the stage did not
    make (`shared/samples/buildkit/calc-runtime-config.json`)."""
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    starts = [index for index, line in enumerate(lines) if line.upper().startswith("FROM ")]
    own = lines[starts[-1] + 1 :] if starts else []
    entries = []
    for line in own:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() not in _LAYERED:
            entries.append({"created_by": line, "comment": "buildkit.dockerfile.v0", "empty_layer": True})
            continue
        if keyword.upper() == "RUN":
            arguments = f"/bin/sh -c {arguments}"
        arguments = re.sub(r"--from=\S+\s+", "", arguments)
        entries.append(
            {"created_by": f"{keyword} {arguments} # buildkit", "comment": "buildkit.dockerfile.v0"}
        )
    made = sum(1 for entry in entries if not entry.get("empty_layer"))
    assert made <= layers, f"the last stage makes {made} layers, more than the image's {layers}"
    base = [{"created_by": "base layer (made without a Dockerfile)"}] * (layers - made)
    return [*base, *entries]


def tag_digest(
    registry: RunningRegistry | str, repository: str, tag: str, *, auth: tuple[str, str] | None = None
) -> str:
    """The digest the registry serves for a tag, as BuildKit resolves a `FROM` reference."""
    with _client(registry, repository, auth, None) as client:
        response = client.head(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST}"},
        )
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


def _client(
    registry: RunningRegistry | str, repository: str, auth: tuple[str, str] | None, token: str | None
) -> httpx.Client:
    headers: dict[str, str] = {}
    if isinstance(registry, RunningRegistry):
        base_url = registry.url
        headers = registry.push_headers(repository)
    else:
        base_url = registry if "://" in registry else f"http://{registry}"
    if auth is not None:
        headers["Authorization"] = _basic_header(*auth)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=base_url, headers=headers, timeout=30.0)


def _push_image(
    client: httpx.Client,
    repository: str,
    tag: str | None,
    layers: list[bytes],
    *,
    media_type: str = OCI_MANIFEST,
    platform: str = "linux/amd64",
    layer_media_type: str | None = None,
    layer_annotations: list[dict[str, str]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> PushedImage:
    docker = media_type == DOCKER_MANIFEST
    os_name, architecture = platform.split("/")[:2]
    config = _canonical(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(layer) for layer in layers]},
        }
        | ({"history": history} if history is not None else {})
    )
    layer_type = layer_media_type or (DOCKER_LAYER if docker else OCI_LAYER)
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": _upload_blob(client, repository, config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": layer_type, "digest": _upload_blob(client, repository, layer), "size": len(layer)}
            | ({"annotations": layer_annotations[index]} if layer_annotations else {})
            for index, layer in enumerate(layers)
        ],
    }
    body = _canonical(manifest)
    digest = _put_manifest(client, repository, tag, body, media_type)
    return PushedImage(
        repository, tag or digest, digest, media_type, manifest, body, len(config), tuple(map(len, layers))
    )


def _upload_blob(client: httpx.Client, repository: str, blob: bytes) -> str:
    """Monolithic upload: POST opens an upload session, PUT with `?digest=` completes it."""
    digest = _sha256(blob)
    started = _check(client.post(f"/v2/{repository}/blobs/uploads/"), 202)
    # Merge, not replace: the Location's own query (`_state=`) identifies the upload.
    location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
    _check(
        client.put(
            location,
            content=blob,
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )
    return digest


def _put_manifest(
    client: httpx.Client, repository: str, tag: str | None, body: bytes, media_type: str
) -> str:
    reference = tag or _sha256(body)
    response = _check(
        client.put(
            f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        ),
        201,
    )
    return response.headers["Docker-Content-Digest"]


def _descriptor(image: PushedImage, platform: str) -> dict[str, Any]:
    os_name, architecture = platform.split("/")[:2]
    return {
        "mediaType": image.media_type,
        "digest": image.digest,
        "size": len(image.manifest_bytes),
        "platform": {"architecture": architecture, "os": os_name},
    }


def _check(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}, "
            f"expected {status}: {response.text[:500]}"
        )
    return response


def _diff_id(layer: bytes) -> str:
    """The digest of the uncompressed layer; non-gzip blobs (attestations) are their own diff."""
    try:
        return _sha256(gzip.decompress(layer))
    except gzip.BadGzipFile:
        return _sha256(layer)


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
