"""What a builder pool's client holds, for tests of the stand-in `buildctl`: a CA and a client certificate
made by the operator's own `servicebuild.pki`, written to a `--tlsdir`, and a build's run directory with the
arguments the operator gives `buildctl` for it."""

import csv
import io
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from servicebuild.pki import KeyPair, issue, new_ca

DAEMON_HOST = "builders-buildkitd.shop.svc"
DAEMON_ADDRESS = f"tcp://{DAEMON_HOST}:1234"


def pool_ca() -> KeyPair:
    return new_ca("builders.shop pool CA", datetime.now(UTC))


def write_tlsdir(run_dir: Path, ca: KeyPair, client: KeyPair) -> Path:
    """`<run dir>/tls` as the operator writes it: `ca.crt`, `tls.crt`, `tls.key`."""
    tls = run_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "ca.crt").write_bytes(ca.cert_pem)
    (tls / "tls.crt").write_bytes(client.cert_pem)
    (tls / "tls.key").write_bytes(client.key_pem)
    return tls


def client_of(ca: KeyPair) -> KeyPair:
    return issue(ca, "servicebuild-operator", datetime.now(UTC))


def write_context(run_dir: Path, files: dict[str, str]) -> Path:
    context = run_dir / "context"
    context.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (context / name).write_text(text)
    return context


def write_docker_config(run_dir: Path, auths: dict[str, dict[str, str]]) -> Path:
    docker = run_dir / "docker"
    docker.mkdir(parents=True, exist_ok=True)
    (docker / "config.json").write_text(json.dumps({"auths": auths}))
    return docker


def build_command(run_dir: Path, image: str, *extra: str, insecure: bool = True) -> list[str]:
    """`buildctl --addr … --tlsdir … build …` for a ConfigMap context in `run_dir`, as the operator runs it;
    `image` may list several names, comma-separated."""
    fields = ["type=image", f"name={image}", "push=true", *(["registry.insecure=true"] if insecure else [])]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    output = buffer.getvalue()
    return [
        "--addr",
        DAEMON_ADDRESS,
        "--tlsdir",
        str(run_dir / "tls"),
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={run_dir / 'context'}",
        "--local",
        f"dockerfile={run_dir / 'context'}",
        "--opt",
        "filename=Dockerfile",
        *extra,
        "--output",
        output,
        "--metadata-file",
        str(run_dir / "metadata.json"),
        "--debug-json-cache-metrics",
        str(run_dir / "cache-metrics.json"),
    ]


def run_buildctl(
    buildctl: Path, args: list[str], run_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `buildctl` as the operator does: in the run directory, `DOCKER_CONFIG=<run dir>/docker`."""
    environment = {"PATH": os.environ["PATH"], "DOCKER_CONFIG": str(run_dir / "docker"), **env}
    return subprocess.run(
        [str(buildctl), *args],
        cwd=run_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
