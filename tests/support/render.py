"""The rendering cases and helpers that tests/unit/test_render_*.py share.

`CASES` names one ServiceBuild, operator Settings and BuildInputs per golden Job in
tests/unit/golden/ (see its README.md); the helpers read the build container, its environment
and buildctl's flag values out of a rendered Job.
"""

import itertools
from pathlib import Path
from typing import Any

import kubernetes_validate

from servicebuild.api.models import ServiceBuild
from servicebuild.config import Settings
from servicebuild.render import job as render
from servicebuild.render.job import BuildInputs

GOLDEN = Path(__file__).parents[1] / "unit" / "golden"
UID = "6f1c2a9e-3b7d-4e58-9a0c-2d4b8e7f1a35"
IMAGE = "registry.example.com/shop/checkout:1.4.2"
TIMESTAMP = "20261128101500"
INPUTS = BuildInputs(timestamp=TIMESTAMP)
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
CONTEXT_DIGEST = "sha256:" + "5e1f0c3a9b7d2e48" * 4
GIT_URL = "https://git.example.com/shop/monorepo.git"
SSH_URL = "git@git.example.com:shop/monorepo.git"
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# A build argument value that would do harm if it ever reached a shell as text.
HOSTILE = "$(touch pwned); `touch pwned` \"q\" 'q' \\ | & * ?\nsecond line, with comma"


SCANNER_MIRROR = "registry.example.com/mirror/buildkit-syft-scanner:1.9.0"


def settings(*insecure: str, **more: Any) -> Settings:
    return Settings(
        buildkit_image="moby/buildkit:v0.32.2-rootless",
        insecure_registries=frozenset(insecure),
        job_ttl_seconds=3600,
        **more,
    )


def servicebuild(name: str = "checkout", generation: int = 3, **spec: Any) -> ServiceBuild:
    spec.setdefault("source", {"configMap": {"name": "checkout-context"}})
    spec.setdefault("output", {"image": IMAGE})
    return ServiceBuild.model_validate(
        {
            "apiVersion": "servicebuild.dev/v1alpha1",
            "kind": "ServiceBuild",
            "metadata": {"name": name, "namespace": "shop", "uid": UID, "generation": generation},
            "spec": spec,
        },
    )


CASES: dict[str, tuple[ServiceBuild, Settings, BuildInputs]] = {
    "minimal": (servicebuild(), settings(), INPUTS),
    "build-args-target-dockerfile": (
        servicebuild(
            dockerfile="Dockerfile.release",
            target="runtime",
            buildArgs={"VERSION": "1.4.2", "GO_VERSION": "1.23", "LDFLAGS": "-s -w"},
            timeout="1h30m",
        ),
        settings(),
        INPUTS,
    ),
    "push-secret": (servicebuild(output={"image": IMAGE, "pushSecret": "registry-push"}), settings(), INPUTS),
    "cache-disabled": (servicebuild(cache={"disabled": True}), settings(), INPUTS),
    "insecure-registry": (
        servicebuild(output={"image": "registry.local:5000/shop/checkout:dev"}),
        settings("registry.local:5000"),
        INPUTS,
    ),
    "cache-min-explicit-ref": (
        servicebuild(cache={"mode": "min", "ref": "registry.example.com/shop/cache:checkout"}),
        settings(),
        INPUTS,
    ),
    "git-token": (
        servicebuild(
            source={
                "git": {
                    "url": GIT_URL,
                    "revision": "main",
                    "contextDir": "services/checkout",
                    "authSecret": "git-creds",
                },
            },
            dockerfile="build/Dockerfile",
            output={"image": IMAGE, "pushSecret": "registry-push"},
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="token"),
    ),
    "git-ssh": (
        servicebuild(source={"git": {"url": SSH_URL, "revision": "v1.4.2", "authSecret": "git-deploy-key"}}),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="ssh"),
    ),
    "configmap-archive": (
        servicebuild(source={"configMap": {"name": "checkout-context", "archive": "context.tar.gz"}}),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "build-secrets": (
        servicebuild(
            secrets=[
                {"id": "npmrc", "secretRef": {"name": "npm-credentials", "key": ".npmrc"}},
                {"id": "sentry_token", "secretRef": {"name": "sentry", "key": "auth-token"}},
            ],
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "multi-arch": (
        servicebuild(platforms=["linux/amd64", "linux/arm64"]),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "tags": (
        servicebuild(
            source={"git": {"url": GIT_URL, "revision": "main"}},
            output={
                "image": IMAGE,
                "tags": ["{shortCommit}", "main-{timestamp}", "build-{generation}", "latest"],
            },
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, commit=COMMIT),
    ),
    "cache-import-refs": (
        servicebuild(
            cache={
                "importRefs": [
                    "registry.example.com/shop/checkout:buildcache-main",
                    "registry.local:5000/shop/checkout:buildcache",
                ],
            },
        ),
        settings("registry.local:5000"),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
    "provenance-max-sbom": (
        servicebuild(attestations={"provenance": "max", "sbom": True}, buildArgs={"VERSION": "1.4.2"}),
        settings(),
        INPUTS,
    ),
    "provenance-off": (servicebuild(attestations={"provenance": "off"}), settings(), INPUTS),
    "sbom-only-by-settings": (
        servicebuild(attestations={"sbom": True}),
        settings(default_provenance="off", sbom_scanner_image=SCANNER_MIRROR),
        INPUTS,
    ),
    "scheduling": (
        servicebuild(
            resources={
                "requests": {"cpu": "2", "memory": "4Gi"},
                "limits": {"memory": "8Gi", "ephemeral-storage": "20Gi"},
            },
            nodeSelector={"kubernetes.io/arch": "arm64", "node.example.com/pool": "builds"},
            tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            affinity={
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/managed-by": "servicebuild-operator"}
                                },
                            },
                        },
                    ],
                },
            },
            serviceAccountName="builder",
            priorityClassName="batch-low",
            queueName="team-shop",
            builderImage="registry.example.com/mirror/buildkit:v0.32.2-rootless",
            pendingTimeout="5m",
        ),
        settings(),
        BuildInputs(timestamp=TIMESTAMP, context_digest=CONTEXT_DIGEST),
    ),
}


def build_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == render.BUILD_CONTAINER
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def flag_values(args: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(args) if name == flag]
