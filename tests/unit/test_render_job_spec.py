"""We test these aspects of the rendered Job and its Pod, asserted directly:

- the deadline, no retries, the TTL and never `suspend`; no service account token even with a
  ServiceAccount, no service links;
- the name (within 63 characters), labels, the ServiceBuild annotation and the owner reference; the
  commit and the context digest on the Job, so a ConfigMap change makes a visibly different Job;
- the `cp -L` or `tar` init container, the rootless build container reading the workspace only, the
  wrapper's paths matching buildctl's;
- Secrets mounted by name and key only: the push secret, build secrets (one `--secret` each), and a
  canary: no Secret value can reach the Job (the renderer gets names and keys only);
- every scheduling option passed through, the Kueue label on the Job only, resources replacing the
  defaults as a whole;
- BuildInputs rejecting malformed values;
- rendering being pure (equal results, nothing shared between them).
"""

import copy
import dataclasses
import inspect
import json
from typing import Any

import kubernetes_validate
import pytest

from servicebuild import naming
from servicebuild.render import job as render
from servicebuild.render.job import BuildInputs, GitAuth, render_job
from support.render import (
    CASES,
    COMMIT,
    CONTEXT_DIGEST,
    GIT_URL,
    IMAGE,
    INPUTS,
    KUBERNETES_VERSIONS,
    SSH_URL,
    TIMESTAMP,
    UID,
    build_container,
    env_of,
    flag_values,
    servicebuild,
    settings,
)

# The Job


def test_deadline_retries_and_ttl() -> None:
    build, config, inputs = CASES["build-args-target-dockerfile"]
    spec = render_job(build, config, inputs)["spec"]
    assert spec["activeDeadlineSeconds"] == 5400 == build.spec.timeout_seconds
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == config.job_ttl_seconds
    assert "suspend" not in spec


def test_no_service_account_token_or_service_links() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod


def test_identity_labels_annotation_and_owner() -> None:
    job = render_job(*CASES["minimal"])
    meta = job["metadata"]
    assert meta["name"] == naming.job_name("checkout", UID, 1, naming.build_key(1, 3, None, 1))
    assert meta["namespace"] == "shop"
    assert meta["labels"] == job["spec"]["template"]["metadata"]["labels"] == naming.job_labels(UID, 3)
    assert meta["annotations"] == {
        naming.ANNOTATION_SERVICEBUILD: "checkout",
        naming.ANNOTATION_BUILD: "1",
        naming.ANNOTATION_PROVENANCE: "min",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "servicebuild.dev/v1alpha1",
            "kind": "ServiceBuild",
            "name": "checkout",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        },
    ]


def test_long_names_fit_in_63_characters() -> None:
    name = "a" + "-b" * 126  # 253 characters, the longest object name
    job = render_job(servicebuild(name=name, generation=123456789), settings(), INPUTS)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"][naming.ANNOTATION_SERVICEBUILD] == name
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_context_is_copied_with_cp_dereferencing_symlinks() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    script = init["command"][-1]
    assert init["command"][:2] == ["sh", "-c"]
    assert 'cp -L "$f" /workspace/' in script
    assert "/configmap/*" in script
    assert init["image"] == build_container({"spec": {"template": {"spec": pod}}})["image"]
    assert {"name": "configmap", "configMap": {"name": "checkout-context"}} in pod["volumes"]
    security = init["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_build_container_is_rootless_and_reads_the_workspace_only() -> None:
    container = build_container(render_job(*CASES["minimal"]))
    assert container["image"] == "moby/buildkit:v0.32.2-rootless"
    assert container["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/workspace"].get("readOnly") is True
    assert "readOnly" not in mounts["/home/user/.local/share/buildkit"]
    assert env_of(container)["BUILDKITD_FLAGS"] == "--oci-worker-no-process-sandbox"


def test_the_wrapper_paths_match_the_buildctl_arguments() -> None:
    container = build_container(render_job(*CASES["minimal"]))
    env = env_of(container)
    assert flag_values(container["args"], "--metadata-file") == [env[render.ENV_METADATA_FILE]]
    assert flag_values(container["args"], "--debug-json-cache-metrics") == [
        env[render.ENV_CACHE_METRICS_FILE]
    ]
    assert env[render.ENV_REPORT_FILE] == container["terminationMessagePath"] == "/dev/termination-log"
    for name in (render.ENV_METADATA_FILE, render.ENV_CACHE_METRICS_FILE, render.ENV_REPORT_FILE):
        assert f'"${name}"' in render.WRAPPER_SCRIPT


def test_push_secret_is_mounted_by_name_only() -> None:
    pod = render_job(*CASES["push-secret"])["spec"]["template"]["spec"]
    container = build_container({"spec": {"template": {"spec": pod}}})
    assert {
        "name": "docker-config",
        "secret": {
            "secretName": "registry-push",
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        },
    } in pod["volumes"]
    assert {"name": "docker-config", "mountPath": "/home/user/.docker", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert env_of(container)["DOCKER_CONFIG"] == "/home/user/.docker"


def test_without_push_secret_there_is_no_docker_config() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    container = build_container({"spec": {"template": {"spec": pod}}})
    assert "docker-config" not in {volume["name"] for volume in pod["volumes"]}
    assert "DOCKER_CONFIG" not in env_of(container)


def test_rendering_is_pure() -> None:
    build, config, inputs = CASES["push-secret"]
    first = render_job(build, config, inputs)
    pristine = copy.deepcopy(first)
    build_container(first)["resources"]["limits"]["memory"] = "1Ti"
    first["metadata"]["labels"]["changed"] = "yes"
    second = render_job(build, config, inputs)
    assert second == pristine
    assert "changed" not in second["spec"]["template"]["metadata"]["labels"]


def test_the_commit_and_the_context_digest_are_recorded_on_the_job() -> None:
    git_job = render_job(*CASES["git-token"])
    assert git_job["metadata"]["annotations"][naming.ANNOTATION_COMMIT] == COMMIT
    assert naming.LABEL_SOURCE not in git_job["metadata"]["labels"]
    archive_job = render_job(*CASES["configmap-archive"])
    assert archive_job["metadata"]["annotations"][naming.ANNOTATION_CONTEXT_DIGEST] == CONTEXT_DIGEST
    assert archive_job["metadata"]["labels"][naming.LABEL_SOURCE] == CONTEXT_DIGEST[7:19] == "5e1f0c3a9b7d"
    assert archive_job["spec"]["template"]["metadata"]["labels"][naming.LABEL_SOURCE] == "5e1f0c3a9b7d"


def test_a_configmap_change_makes_a_visibly_different_job() -> None:
    build = servicebuild()
    jobs = [
        render_job(build, settings(), BuildInputs(timestamp=TIMESTAMP, context_digest="sha256:" + digit * 64))
        for digit in "ab"
    ]
    assert jobs[0]["metadata"]["name"] != jobs[1]["metadata"]["name"]
    assert jobs[0]["metadata"]["labels"][naming.LABEL_SOURCE] == "a" * 12
    assert jobs[1]["metadata"]["labels"][naming.LABEL_SOURCE] == "b" * 12
    assert jobs[0]["metadata"]["name"] == naming.job_name(
        "checkout", UID, 1, naming.build_key(1, 3, "sha256:" + "a" * 64, 1)
    )


# ConfigMap archives


def test_an_archive_is_unpacked_instead_of_copying_keys() -> None:
    pod = render_job(*CASES["configmap-archive"])["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "sh",
        "-c",
        render.EXTRACT_ARCHIVE_SCRIPT,
        "extract-context",
        "/configmap/context.tar.gz",
    ]
    assert render.EXTRACT_ARCHIVE_SCRIPT.startswith('set -e; tar -xzf "$1" -C /workspace; ')
    assert {
        "name": "configmap",
        "configMap": {
            "name": "checkout-context",
            "items": [{"key": "context.tar.gz", "path": "context.tar.gz"}],
        },
    } in pod["volumes"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


# Build secrets


def test_build_secrets_are_projected_by_name_and_key() -> None:
    job = render_job(*CASES["build-secrets"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert {
        "name": "build-secrets",
        "projected": {
            "sources": [
                {"secret": {"name": "npm-credentials", "items": [{"key": ".npmrc", "path": "npmrc"}]}},
                {"secret": {"name": "sentry", "items": [{"key": "auth-token", "path": "sentry_token"}]}},
            ],
        },
    } in pod["volumes"]
    assert {"name": "build-secrets", "mountPath": "/run/secrets/build", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert flag_values(container["args"], "--secret") == [
        "id=npmrc,src=/run/secrets/build/npmrc",
        "id=sentry_token,src=/run/secrets/build/sentry_token",
    ]


# What the Secrets hold, as the API server would return it: the renderer is never given any of it.
SECRET_VALUES = {
    "npm-credentials": {".npmrc": "//registry.npmjs.org/:_authToken=npm_CANARY0b1d7e4c"},
    "sentry": {"auth-token": "sntrys_CANARY9a8f7e6d"},
    "git-creds": {"token": "ghp_CANARY5c4b3a29", "username": "ci-bot-canary"},
    "git-deploy-key": {"ssh-privatekey": "-----BEGIN OPENSSH PRIVATE KEY-----\nCANARYb3BlbnNzaC1rZXk\n"},
    "registry-push": {".dockerconfigjson": '{"auths":{"registry.example.com":{"auth":"Q0FOQVJZOnB3"}}}'},
}


@pytest.mark.parametrize("git_auth", ["token", "ssh"])
def test_canary_no_secret_value_can_reach_the_job(git_auth: GitAuth) -> None:
    # The renderer's inputs name Secrets and keys only: the ServiceBuild, the operator Settings and
    # BuildInputs (a timestamp, a commit, a digest, which key to use, attempt and build numbers, a trigger's
    # name). So nothing
    # it renders can hold a value; the canaries prove it for this Job as a whole.
    assert list(inspect.signature(render_job).parameters) == ["build", "settings", "inputs"]
    assert {field.name for field in dataclasses.fields(BuildInputs)} == {
        "timestamp",
        "commit",
        "context_digest",
        "git_auth",
        "attempt",
        "build",
        "trigger",
    }
    build = servicebuild(
        source={"git": {"url": GIT_URL if git_auth == "token" else SSH_URL, "authSecret": f"git-{git_auth}"}},
        output={"image": IMAGE, "pushSecret": "registry-push"},
        secrets=[
            {"id": "npmrc", "secretRef": {"name": "npm-credentials", "key": ".npmrc"}},
            {"id": "sentry", "secretRef": {"name": "sentry", "key": "auth-token"}},
        ],
    )
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth=git_auth)
    job = render_job(build, settings(), inputs)
    text = json.dumps(job)
    for data in SECRET_VALUES.values():
        for value in data.values():
            assert value not in text
    assert "CANARY" not in text
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)
    # Where the Job touches a Secret, it holds exactly a name and keys.
    pod = job["spec"]["template"]["spec"]
    secret_volumes = [volume for volume in pod["volumes"] if "secret" in volume or "projected" in volume]
    references = [volume["secret"] for volume in secret_volumes if "secret" in volume] + [
        source["secret"]
        for volume in secret_volumes
        if "projected" in volume
        for source in volume["projected"]["sources"]
    ]
    assert len(references) == 4
    for reference in references:
        assert set(reference) in ({"secretName", "items"}, {"name", "items"})
        for item in reference["items"]:
            assert set(item) == {"key", "path"}


# Scheduling


def test_scheduling_fields_are_passed_through() -> None:
    build, config, inputs = CASES["scheduling"]
    job = render_job(build, config, inputs)
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert pod["serviceAccountName"] == "builder"
    assert pod["automountServiceAccountToken"] is False  # a chosen ServiceAccount still gets no token
    assert pod["priorityClassName"] == "batch-low"
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64", "node.example.com/pool": "builds"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    assert pod["affinity"] == build.spec.affinity
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi", "ephemeral-storage": "20Gi"},
    }
    image = "registry.example.com/mirror/buildkit:v0.32.2-rootless"
    assert container["image"] == pod["initContainers"][0]["image"] == image


def test_the_kueue_queue_is_a_job_label_and_the_job_is_never_suspended() -> None:
    job = render_job(*CASES["scheduling"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-shop"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert "suspend" not in job["spec"]
    unqueued = render_job(*CASES["minimal"])
    assert "kueue.x-k8s.io/queue-name" not in unqueued["metadata"]["labels"]


def test_resources_replace_the_defaults_as_a_whole() -> None:
    only_requests = servicebuild(resources={"requests": {"cpu": 4}})
    container = build_container(render_job(only_requests, settings(), INPUTS))
    assert container["resources"] == {"requests": {"cpu": "4"}}, "a quantity as Kubernetes serialises it"
    defaults = build_container(render_job(*CASES["minimal"]))
    assert defaults["resources"] == render.BUILD_RESOURCES


def test_without_scheduling_options_the_pod_sets_none() -> None:
    pod = render_job(*CASES["minimal"])["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "priorityClassName", "nodeSelector", "tolerations", "affinity"):
        assert field not in pod


# Build inputs


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"timestamp": "2026-11-28T10:15:00Z"}, id="timestamp not compact"),
        pytest.param({"timestamp": TIMESTAMP, "commit": COMMIT[:12]}, id="short commit"),
        pytest.param({"timestamp": TIMESTAMP, "commit": COMMIT.upper()}, id="upper-case commit"),
        pytest.param({"timestamp": TIMESTAMP, "context_digest": "5e1f" * 16}, id="digest without algorithm"),
        pytest.param({"timestamp": TIMESTAMP, "git_auth": "header"}, id="unknown auth"),
    ],
)
def test_build_inputs_reject_malformed_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="is not"):
        BuildInputs(**fields)


def test_build_inputs_accept_sha256_repositories() -> None:
    assert BuildInputs(timestamp=TIMESTAMP, commit="ab" * 32).commit == "ab" * 32
