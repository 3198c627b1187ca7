"""Registry gateway: the only module that talks to OCI registries (auth, manifests, image sizes, and the
tags the operator writes for a `Fail` size budget)."""

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import httpx

from servicebuild import manifests
from servicebuild.credentials import Credentials
from servicebuild.credentials import RegistryError as RegistryError  # noqa: PLC0414 (re-exported, PEP 484)
from servicebuild.imageref import ImageRef
from servicebuild.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageSummary,
    attestation_manifests,
    platform_manifests,
    summarize,
)

# All four types: registry 2.8 answers 404 for an OCI manifest when only the Docker type is accepted.
_ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}"
_DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_TOKEN_MARGIN_SECONDS = 10  # renew a cached token this long before it expires
_DEFAULT_TOKEN_SECONDS = 60  # the token spec's default when the service gives no expires_in


# The names below are part of the project's vocabulary (the status reasons use them), hence N818.
# RegistryError and InvalidPushSecret are in credentials.py: reading a push secret raises them.
class RegistryUnavailable(RegistryError):  # noqa: N818
    """Connection failure, timeout, 5xx or 429: worth retrying later."""

    transient = True


class RegistryAuthDenied(RegistryError):  # noqa: N818
    """The registry (or its token service) refused the credentials, or needs some and has none."""


class ManifestNotFound(RegistryError):  # noqa: N818
    """The registry has no manifest with that digest in that repository."""


class DigestMismatch(RegistryError):  # noqa: N818
    """The registry served a manifest whose digest differs from the one asked for."""


class InvalidManifest(RegistryError):  # noqa: N818
    """The registry served something that is not a usable image manifest or index."""


def _unfenced(action: str) -> None:
    """No leader election: every write may be sent."""


class RegistryClient:
    """Reads manifests over the distribution API, and writes tags; one per operator, shared by all handlers.

    `fence` is asked just before a tag is written (an acting write, as the Kubernetes gateway's): with
    leader election it is `Kube.fence`, which raises when this replica does not lead.
    """

    def __init__(
        self,
        *,
        insecure_registries: frozenset[str],
        timeout: float,
        fence: Callable[[str], None] = _unfenced,
    ) -> None:
        self.fence = fence
        self._insecure = insecure_registries
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)
        # Keyed by credentials too: a token got with one namespace's secret must not serve another's.
        self._tokens: dict[tuple[str, str, Credentials | None], tuple[str, float]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def inspect(self, image: ImageRef, digest: str, credentials: Credentials | None) -> ImageSummary:
        """Fetch the manifest `digest` of `image`'s repository (and its platforms' and attestations'
        manifests) and size it."""
        media_type, document = self._fetch(image, digest, credentials)
        try:
            children = {}
            if media_type in INDEX_TYPES:
                attestations = [digest for digest, _ in attestation_manifests(document)]
                for child in [*(child for _, child in platform_manifests(document)), *attestations]:
                    children[child] = self._fetch(image, child, credentials)[1]
            return summarize(digest, media_type, document, children)
        except manifests.InvalidManifest as exc:
            raise InvalidManifest(str(exc)) from None

    def manifest_and_config(
        self, image: ImageRef, digest: str, credentials: Credentials | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The image manifest `digest` (one platform's, not an index) and the image config it names, whose
        `history` tells which instruction made each layer."""
        media_type, manifest = self._fetch(image, digest, credentials)
        config = manifest.get("config")
        if media_type not in MANIFEST_TYPES or not isinstance(config, dict):
            raise InvalidManifest(f"{digest} of {image.name} is not an image manifest")
        config_digest = str(config.get("digest"))
        return manifest, self._document(image, f"blobs/{config_digest}", config_digest, credentials)[1]

    def _fetch(
        self, image: ImageRef, digest: str, credentials: Credentials | None
    ) -> tuple[str, dict[str, Any]]:
        response, document = self._document(image, f"manifests/{digest}", digest, credentials)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        return document.get("mediaType") or content_type, document

    def _document(
        self, image: ImageRef, path: str, digest: str, credentials: Credentials | None
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """A JSON object the registry serves by its digest (a manifest, an image config), checked against
        the digest."""
        if not _DIGEST_RE.match(digest):
            raise RegistryError(f"{digest!r} is not a sha256 or sha512 digest")
        response = self._get(image, path, credentials)
        algorithm, _, expected = digest.partition(":")
        if hashlib.new(algorithm, response.content).hexdigest() != expected:
            raise DigestMismatch(
                f"registry {image.api_host} served {path} in repository "
                f"{image.repository} whose content has another digest"
            )
        try:
            document = json.loads(response.content)
        except ValueError:
            raise InvalidManifest(f"{path} of {image.name} is not JSON") from None
        if not isinstance(document, dict):
            raise InvalidManifest(f"{path} of {image.name} is not a JSON object")
        return response, document

    def tag_digest(self, image: ImageRef, credentials: Credentials | None) -> str:
        """The digest the registry serves for `image`'s tag now, from a HEAD request (which Docker Hub
        counts as no pull)."""
        response = self._get(image, f"manifests/{image.tag}", credentials, method="HEAD")
        digest = str(response.headers.get("docker-content-digest", ""))
        if not _DIGEST_RE.match(digest):
            raise InvalidManifest(f"registry {image.api_host} named no digest for {image}")
        return digest

    def tag(self, image: ImageRef, digest: str, credentials: Credentials | None) -> None:
        """Point `image`'s tag at the manifest (or index) `digest` of its repository: the manifest put
        again under the tag, as `crane tag` does; needs push rights."""
        response, _ = self._document(image, f"manifests/{digest}", digest, credentials)
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        self.fence(f"tag {image} as {digest}")
        self._get(
            image, f"manifests/{image.tag}", credentials, method="PUT", body=(media_type, response.content)
        )

    def _get(
        self,
        image: ImageRef,
        path: str,
        credentials: Credentials | None,
        *,
        method: str = "GET",
        body: tuple[str, bytes] | None = None,
    ) -> httpx.Response:
        """A request to the repository's API, answering its auth challenge; `body` is (media type, bytes)."""
        host = image.api_host
        scheme = "http" if {image.registry, host} & self._insecure else "https"
        url = f"{scheme}://{host}/v2/{image.repository}/{path}"
        headers = {"Accept": _ACCEPT} | ({"Content-Type": body[0]} if body else {})
        actions = "pull,push" if body else "pull"
        cached = self._tokens.get((host, f"repository:{image.repository}:{actions}", credentials))
        if cached and cached[1] > time.monotonic():
            headers["Authorization"] = f"Bearer {cached[0]}"
        content = body[1] if body else None
        response = self._send(method, url, headers, host, content)
        if response.status_code == 401:
            headers["Authorization"] = self._authorization(response, image, credentials)
            response = self._send(method, url, headers, host, content)
        if response.is_success:
            return response
        what = f"registry {host} answered HTTP {response.status_code} for {path} of {image.repository}"
        raise _status_error(response.status_code, what, credentials)

    def _send(
        self, method: str, url: str, headers: dict[str, str], host: str, content: bytes | None = None
    ) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=headers, content=content)
        except httpx.TransportError as error:
            raise RegistryUnavailable(f"registry {host} is unreachable: {type(error).__name__}") from error

    def _authorization(
        self, response: httpx.Response, image: ImageRef, credentials: Credentials | None
    ) -> str:
        """The Authorization header that answers the registry's 401 challenge."""
        scheme, params = _parse_challenge(response.headers.get_list("www-authenticate"))
        if scheme == "bearer" and "realm" in params:
            return f"Bearer {self._token(image, params, credentials)}"
        if scheme == "basic" and credentials is not None:
            basic = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
            return f"Basic {basic}"
        if scheme == "basic":
            raise RegistryAuthDenied(
                f"registry {image.api_host} requires credentials for repository {image.repository} "
                "and the push secret has none for it"
            )
        raise RegistryAuthDenied(f"registry {image.api_host} asks for an unsupported authentication scheme")

    def _token(self, image: ImageRef, challenge: dict[str, str], credentials: Credentials | None) -> str:
        """Get a token from the challenge's realm, with the credentials if any (the token spec)."""
        host = image.api_host
        query: dict[str, str] = {name: challenge[name] for name in ("service", "scope") if name in challenge}
        auth = (credentials.username, credentials.password) if credentials else None
        try:
            response = self._http.get(challenge["realm"], params=query, auth=auth)
        except httpx.TransportError as error:
            raise RegistryUnavailable(
                f"the token service of {host} is unreachable: {type(error).__name__}"
            ) from error
        except httpx.InvalidURL:
            raise RegistryError(f"registry {host} names an invalid token realm") from None
        what = f"the token service of {host} answered HTTP {response.status_code} for {image.repository}"
        if response.status_code == 404:
            raise RegistryError(what)  # not ManifestNotFound: the manifest may well be there
        if not response.is_success:
            raise _status_error(response.status_code, what, credentials)
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token service of {host} answered without a token")
        lifetime = body.get("expires_in")
        lifetime = lifetime if isinstance(lifetime, int) else _DEFAULT_TOKEN_SECONDS
        if lifetime > _TOKEN_MARGIN_SECONDS:
            expiry = time.monotonic() + lifetime - _TOKEN_MARGIN_SECONDS
            self._tokens[host, challenge.get("scope", ""), credentials] = (token, expiry)
        return token


def _parse_challenge(headers: list[str]) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and parameters of a WWW-Authenticate challenge; Bearer preferred."""
    if not headers:
        return "", {}
    header = next((header for header in headers if header.lower().startswith("bearer ")), headers[0])
    return header.split(" ", 1)[0].lower(), dict(_CHALLENGE_PARAM_RE.findall(header))


def _status_error(status: int, what: str, credentials: Credentials | None) -> RegistryError:
    if status in (401, 403):
        who = "the push secret's credentials" if credentials else "anonymous access (no push secret entry)"
        return RegistryAuthDenied(f"{what}: {who} denied")
    if status == 404:
        return ManifestNotFound(what)
    if status in (408, 429) or status >= 500:
        return RegistryUnavailable(what)
    return RegistryError(what)
