"""We test that the stand-in `buildctl` of builder pools refuses what the real client or daemon refuses, with
their words, before anything reaches a registry:

- a client certificate of another CA (the daemon's alert: unknown certificate authority), a certificate
  without the clientAuth usage (bad certificate), a key that is not the certificate's, a daemon whose
  certificate does not name the address's host;
- a `--secret` file that does not exist, a Dockerfile missing from the `--local` directory, a missing
  `--tlsdir` file;
- a daemon planned `unreachable` (connection refused), and the plan's words consumed in order;
- every call is recorded with its arguments, its environment's keys but never their values, and its tlsdir.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from servicebuild.pki import issue
from support.fake_buildctl import calls, plan, trust_daemon
from support.pool_client import (
    DAEMON_HOST,
    build_command,
    client_of,
    pool_ca,
    run_buildctl,
    write_context,
    write_tlsdir,
)

IMAGE = "127.0.0.1:9/tests/refusals:1"
"""No registry listens there: a refused build never pushes."""
REPOSITORY = "tests/refusals"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_context(run, {"Dockerfile": "FROM scratch\nCOPY app /app\n", "app": "binary"})
    return run


def test_a_client_certificate_of_another_ca_is_refused_by_the_daemon(
    fake_buildctl, run_dir, buildctl_plan_dir
):
    ca, other = pool_ca(), pool_ca()
    trust_daemon(buildctl_plan_dir, DAEMON_HOST, ca.cert_pem)
    write_tlsdir(run_dir, ca, client_of(other))

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert "error reading server preface: remote error: tls: unknown certificate authority" in result.stderr
    assert result.stderr.startswith("error: failed to get status: Unavailable: connection error")


def test_a_certificate_without_client_auth_is_a_bad_certificate(fake_buildctl, run_dir, buildctl_plan_dir):
    ca = pool_ca()
    server = issue(ca, "daemon", datetime.now(UTC), server_names=(DAEMON_HOST,))
    write_tlsdir(run_dir, ca, server)  # the daemon's own certificate: serverAuth only

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert "remote error: tls: bad certificate" in result.stderr


def test_a_key_of_another_certificate_is_refused_before_dialling(fake_buildctl, run_dir):
    ca = pool_ca()
    tls = write_tlsdir(run_dir, ca, client_of(ca))
    (tls / "tls.key").write_bytes(client_of(ca).key_pem)

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert "could not read certificate/key: tls: private key does not match public key" in result.stderr


def test_the_daemon_certificate_must_name_the_address_host(fake_buildctl, run_dir, buildctl_plan_dir):
    ca = pool_ca()
    server = issue(ca, "daemon", datetime.now(UTC), server_names=("other-buildkitd.shop.svc",))
    trust_daemon(buildctl_plan_dir, DAEMON_HOST, ca.cert_pem, server.cert_pem)
    write_tlsdir(run_dir, ca, client_of(ca))

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert f"certificate is valid for other-buildkitd.shop.svc, not {DAEMON_HOST}" in result.stderr


def test_a_daemon_of_another_ca_is_not_trusted_by_the_client(fake_buildctl, run_dir, buildctl_plan_dir):
    ca, other = pool_ca(), pool_ca()
    server = issue(other, "daemon", datetime.now(UTC), server_names=(DAEMON_HOST,))
    trust_daemon(buildctl_plan_dir, DAEMON_HOST, other.cert_pem, server.cert_pem)
    write_tlsdir(run_dir, ca, client_of(ca))

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert "x509: certificate signed by unknown authority" in result.stderr


def test_a_missing_secret_file_is_refused_as_buildctl_refuses_it(fake_buildctl, run_dir):
    ca = pool_ca()
    write_tlsdir(run_dir, ca, client_of(ca))
    missing = run_dir / "secrets" / "npmrc"

    result = run_buildctl(
        fake_buildctl, build_command(run_dir, IMAGE, "--secret", f"id=npmrc,src={missing}"), run_dir
    )

    assert result.returncode == 1
    assert result.stderr == f"error: failed to stat {missing}: stat {missing}: no such file or directory\n"


def test_a_missing_dockerfile_fails_the_solve(fake_buildctl, run_dir):
    ca = pool_ca()
    write_tlsdir(run_dir, ca, client_of(ca))
    (run_dir / "context" / "Dockerfile").unlink()

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert "failed to read dockerfile: open Dockerfile: no such file or directory" in result.stderr


def test_a_missing_tls_file_is_named(fake_buildctl, run_dir):
    ca = pool_ca()
    tls = write_tlsdir(run_dir, ca, client_of(ca))
    (tls / "tls.key").unlink()

    result = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert result.returncode == 1
    assert f"stat {tls / 'tls.key'}: no such file or directory" in result.stderr


def test_an_unreachable_daemon_refuses_the_connection_then_the_plan_goes_on(
    fake_buildctl, run_dir, buildctl_plan_dir
):
    ca = pool_ca()
    write_tlsdir(run_dir, ca, client_of(ca))
    plan(buildctl_plan_dir, REPOSITORY, "unreachable", "fail")

    unreachable = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)
    failing = run_buildctl(fake_buildctl, build_command(run_dir, IMAGE), run_dir)

    assert unreachable.returncode == 1
    assert f"dial tcp {DAEMON_HOST}:1234: connect: connection refused" in unreachable.stderr
    assert failing.returncode == 1
    assert 'ERROR: process "/bin/sh -c make greet" did not complete successfully' in failing.stderr
    assert failing.stderr.rstrip().endswith(
        'error: failed to solve: process "/bin/sh -c make greet" did not complete successfully: exit code: 2'
    )


def test_every_call_is_recorded_without_environment_values(fake_buildctl, run_dir, buildctl_plan_dir):
    ca = pool_ca()
    write_tlsdir(run_dir, ca, client_of(ca))
    plan(buildctl_plan_dir, REPOSITORY, "unreachable")
    args = build_command(run_dir, IMAGE)

    canary = "s3cr3t-value"

    run_buildctl(fake_buildctl, args, run_dir, PUSH_TOKEN=canary)

    (call,) = calls(buildctl_plan_dir)
    assert call["argv"] == args
    assert {"DOCKER_CONFIG", "PUSH_TOKEN"} <= set(call["env"])
    assert call["tlsdir"] == ["ca.crt", "tls.crt", "tls.key"]
    assert call["cwd"] == str(run_dir)
    assert canary not in (buildctl_plan_dir / "calls.jsonl").read_text()
