"""A stand-in `buildctl` for builder pools: plays `buildctl --addr tcp://… --tlsdir DIR build …` against a
pool's long-running daemon, as the real client and daemon behave.

`install_fake_buildctl(directory, plan_dir)` writes an executable `buildctl` into `directory` (put it first
on the operator's PATH) that runs `main` with this interpreter. Each call:

- is recorded first, as one JSON line of `<plan_dir>/calls.jsonl`: `argv` (after `buildctl`), `env` (the
  environment's keys, never values), `tlsdir` (the file names in `--tlsdir`), `cwd`, `pid`;
- checks what buildctl checks before it dials (`--addr tcp://HOST:PORT` before `build`; `--tlsdir` holding
  `ca.pem`/`cert.pem`/`key.pem` or `ca.crt`/`tls.crt`/`tls.key`, the key matching the certificate; every
  `--secret src=` file there), then the TLS handshake: the client certificate must chain to the daemon's CA
  and carry the clientAuth usage, and the daemon's certificate (when `trust_daemon` gave one) must chain to
  the client's CA and name HOST. Each failure ends as buildctl's does: `error: …` on stderr, exit 1;
- plays the next word planned for the image repository of its first `--output` name (`plan`): `succeed`
  (the default), `fail` (BuildKit's failure log), `hold` (until `release`), `unreachable` (connection
  refused), `cache-export-fails` (built and pushed, no `cache.manifest`);
- on success pushes a real image (an index for platforms or attestations) under every output name, writes
  `--metadata-file` and `--debug-json-cache-metrics` as buildctl does, and prints BuildKit's plain progress
  on stderr: `FROM …@sha256` for the test registries' base images, the FromAsCasing check, and `CACHED` for
  the steps this stand-in's daemon built before (its cache is `daemon-state.json` in `directory`).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from servicebuild.credentials import credentials_from_docker_config
from servicebuild.imageref import parse_image

from .buildkit_play import (
    BUILDKIT_FAILURE_LOG,
    PushedResult,
    check_warnings,
    csv_attributes,
    frontend_options,
    missing_scanner,
    missing_scanner_log,
    option_values,
    output_names,
    push_result,
)
from .oci_registry import OCI_MANIFEST, push_image, tag_digest

Behaviour = Literal["succeed", "fail", "hold", "unreachable", "cache-export-fails"]
BEHAVIOURS: tuple[Behaviour, ...] = ("succeed", "fail", "hold", "unreachable", "cache-export-fails")

CALLS_FILE = "calls.jsonl"
ENDS_FILE = "ends.jsonl"
"""When each call ended (`pid`, `ended`: epoch seconds), for timing what runs around it."""
CONFIG_FILE = "fake-buildctl.json"
STATE_FILE = "daemon-state.json"
TLS_FILE_SETS = (("ca.pem", "cert.pem", "key.pem"), ("ca.crt", "tls.crt", "tls.key"))
"""What `buildctl --tlsdir` reads: Docker's names, or a `kubernetes.io/tls` Secret's."""
_TEST_REGISTRIES = ("127.0.0.1:", "localhost:")
_STEP_KEYWORDS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})
"""The instructions BuildKit runs as steps (`[stage i/n]`); the others only change the image config."""


class BuildctlError(Exception):
    """buildctl's own failure: printed as `error: <message>`, exit code 1."""


# ---------------------------------------------------------------------------------------------
# What tests call


def install_fake_buildctl(
    directory: Path, plan_dir: Path, *, mirrors: Mapping[str, str] | None = None
) -> Path:
    """Write the executable `directory/buildctl` and its settings; return its path. `mirrors`: registry host
    → host really pushed to (as a registry mirror would route it)."""
    directory.mkdir(parents=True, exist_ok=True)
    plan_dir.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    settings = {
        "plan_dir": str(plan_dir),
        "state": str(directory / STATE_FILE),
        "mirrors": dict(mirrors or {}),
    }
    config.write_text(json.dumps(settings))
    tests = Path(__file__).resolve().parents[1]
    bootstrap = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); "
        f"from support.fake_buildctl import main; sys.exit(main({str(config)!r}, sys.argv[1:]))"
    )
    script = directory / "buildctl"
    # exec: the interpreter is the process the operator started, so signals to it (or its group) end it.
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(bootstrap)} "$@"\n')
    script.chmod(0o755)
    return script


def plan(plan_dir: Path, repository: str, *behaviours: Behaviour) -> None:
    """Queue what the next builds pushing to `repository` do, one word each; `succeed` once none is left."""
    unknown = set(behaviours) - set(BEHAVIOURS)
    assert not unknown, f"no such behaviour: {unknown}"
    path = _plan_path(plan_dir, repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(plan_dir), path.open("a") as plans:
        plans.writelines(f"{behaviour}\n" for behaviour in behaviours)


def trust_daemon(plan_dir: Path, host: str, ca_pem: bytes, server_cert_pem: bytes | None = None) -> None:
    """The daemon at `host` (as `--addr` names it) trusts clients of `ca_pem` and serves `server_cert_pem`.
    Without this the daemon trusts the CA in the client's `--tlsdir`."""
    daemon = plan_dir / "daemons" / host
    daemon.mkdir(parents=True, exist_ok=True)
    (daemon / "ca.crt").write_bytes(ca_pem)
    if server_cert_pem is not None:
        (daemon / "tls.crt").write_bytes(server_cert_pem)


def calls(plan_dir: Path) -> list[dict[str, Any]]:
    """Every call so far, oldest first; with `ended` (epoch seconds) once it ended."""
    ends = {end["pid"]: end["ended"] for end in _json_lines(plan_dir / ENDS_FILE)}
    return [{**call, "ended": ends.get(call["pid"])} for call in _json_lines(plan_dir / CALLS_FILE)]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def holds_started(plan_dir: Path, repository: str) -> int:
    """How many `hold` builds for `repository` have started (and printed their first steps)."""
    marker = _held_path(plan_dir, repository, "started")
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def release(plan_dir: Path, repository: str, behaviour: Behaviour = "succeed") -> None:
    """Let the held builds of `repository` go on: they then do `behaviour`."""
    _held_path(plan_dir, repository, "release").write_text(behaviour)


def _plan_path(plan_dir: Path, repository: str) -> Path:
    return plan_dir / "plans" / urllib.parse.quote(repository, safe="")


def _held_path(plan_dir: Path, repository: str, what: str) -> Path:
    folder = plan_dir / "held"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{urllib.parse.quote(repository, safe='')}.{what}"


@contextlib.contextmanager
def _locked(plan_dir: Path) -> Iterator[None]:
    """One call at a time reads or writes the plans and the daemon's state: builds run concurrently."""
    with (plan_dir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# The process


def main(config_path: str, argv: Sequence[str]) -> int:
    config = json.loads(Path(config_path).read_text())
    plan_dir = Path(config["plan_dir"])
    global_flags, build = _split(argv)
    tlsdir = Path(global_flags["--tlsdir"]) if "--tlsdir" in global_flags else None
    _record(plan_dir, argv, tlsdir)
    try:
        _Build(plan_dir, Path(config["state"]), config["mirrors"], global_flags, build).run()
    except BuildctlError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    finally:
        with _locked(plan_dir), (plan_dir / ENDS_FILE).open("a") as ends:
            ends.write(json.dumps({"pid": os.getpid(), "ended": time.time()}) + "\n")
    return 0


def _started_at() -> float:
    """When this process started (epoch seconds), exec'd interpreter and all: its start in /proc, in clock
    ticks after boot, against the time since boot."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def _split(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The global flags (`--flag value` or `--flag=value`) before `build`, and the build's arguments."""
    flags: dict[str, str] = {}
    index = 0
    while index < len(argv) and argv[index] != "build":
        name, equals, value = argv[index].partition("=")
        if not equals:
            index += 1
            value = argv[index] if index < len(argv) else ""
        flags[name] = value
        index += 1
    return flags, list(argv[index + 1 :])


def _record(plan_dir: Path, argv: Sequence[str], tlsdir: Path | None) -> None:
    files = sorted(path.name for path in tlsdir.iterdir()) if tlsdir and tlsdir.is_dir() else None
    call = {
        "argv": list(argv),
        "env": sorted(os.environ),
        "tlsdir": files,
        "cwd": str(Path.cwd()),
        "pid": os.getpid(),
        "started": _started_at(),
    }
    with _locked(plan_dir), (plan_dir / CALLS_FILE).open("a") as log:
        log.write(json.dumps(call) + "\n")


@dataclass
class _Step:
    name: str
    """As BuildKit prints it: `[build 2/4] WORKDIR /src`."""
    key: str
    """Its cache key: the same key on the same daemon is CACHED."""
    is_from: bool = False
    resolved: str = ""
    """`<ref>@<digest>` of a FROM step."""


@dataclass
class _Build:
    plan_dir: Path
    state: Path
    mirrors: Mapping[str, str]
    flags: Mapping[str, str]
    args: list[str]
    started: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)
    vertex: int = 0

    def run(self) -> None:
        if not self.args:
            raise BuildctlError("the stand-in plays `buildctl … build …` only")
        host = self._dial_target()
        client_ca, client_cert = self._client_tls()
        self._check_secrets()
        repository = parse_image(output_names(self.args)[0]).repository
        behaviour = self._next_behaviour(repository)
        if behaviour == "unreachable":
            raise BuildctlError(
                _unavailable(f"transport: error while dialing: dial tcp {host}: connect: connection refused")
            )
        self._handshake(host.rpartition(":")[0], client_ca, client_cert)
        dockerfile, context = self._read_context()
        if behaviour == "hold":
            behaviour = self._hold(repository)
        if behaviour == "fail":
            sys.stderr.write(BUILDKIT_FAILURE_LOG)
            raise BuildctlError(BUILDKIT_FAILURE_LOG.splitlines()[-1].removeprefix("ERROR: "))
        scanner = missing_scanner(self.args)
        if scanner is not None:
            sys.stderr.write(missing_scanner_log(scanner).rpartition("error: ")[0])
            raise BuildctlError(missing_scanner_log(scanner).rpartition("error: ")[2].strip())
        self._succeed(dockerfile, context, cache_exported=behaviour != "cache-export-fails")

    def _dial_target(self) -> str:
        address = self.flags.get("--addr")
        if address is None:  # buildctl's default: the local daemon's socket, which a pool build never has
            path = "/run/buildkit/buildkitd.sock"
            raise BuildctlError(
                _unavailable(
                    f"transport: error while dialing: dial unix {path}: connect: no such file or directory"
                )
            )
        url = urllib.parse.urlsplit(address)
        if url.scheme != "tcp" or not url.hostname or url.port is None:
            raise BuildctlError(f"the stand-in plays a pool's daemon at tcp://HOST:PORT, not {address!r}")
        return f"{url.hostname}:{url.port}"

    def _client_tls(self) -> tuple[x509.Certificate, x509.Certificate]:
        """Load `--tlsdir` as buildctl does (`client.WithServerConfig`, `client.WithCredentials`)."""
        if "--tlsdir" not in self.flags:
            raise BuildctlError(
                _unavailable("error reading server preface: EOF")
            )  # plain HTTP/2 to a TLS port
        tlsdir = Path(self.flags["--tlsdir"])
        files = next(
            ([tlsdir / name for name in names] for names in TLS_FILE_SETS if (tlsdir / names[0]).exists()),
            [tlsdir / name for name in TLS_FILE_SETS[0]],
        )
        for path in files:
            if not path.is_file():
                raise BuildctlError(f"stat {path}: no such file or directory")
        ca_path, cert_path, key_path = files
        try:
            ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        except ValueError:
            raise BuildctlError("failed to append ca certs") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError:
            raise BuildctlError("could not read certificate/key: tls: failed to find any PEM data") from None
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise BuildctlError("could not read certificate/key: tls: private key does not match public key")
        return ca, cert

    def _check_secrets(self) -> None:
        """`secretsprovider.NewStore`: every file source must exist (it is read when a step mounts it)."""
        for value in option_values(self.args, "--secret"):
            attributes = csv_attributes(value)
            source = attributes.get("src") or attributes.get("source") or attributes.get("id", "")
            try:
                Path(source).open("rb").close()
            except FileNotFoundError:
                raise BuildctlError(
                    f"failed to stat {source}: stat {source}: no such file or directory"
                ) from None
            except PermissionError:
                raise BuildctlError(f"failed to solve: open {source}: permission denied") from None

    def _next_behaviour(self, repository: str) -> Behaviour:
        path = _plan_path(self.plan_dir, repository)
        with _locked(self.plan_dir):
            planned = path.read_text().splitlines() if path.exists() else []
            if planned:
                path.write_text("".join(f"{word}\n" for word in planned[1:]))
        return planned[0] if planned else "succeed"  # type: ignore[return-value]

    def _handshake(self, host: str, client_ca: x509.Certificate, client_cert: x509.Certificate) -> None:
        """The TLS handshake: the client checks the daemon's certificate, then the daemon the client's."""
        daemon = self.plan_dir / "daemons" / host
        daemon_ca = (
            x509.load_pem_x509_certificate((daemon / "ca.crt").read_bytes()) if daemon.is_dir() else client_ca
        )
        server_path = daemon / "tls.crt"
        server = x509.load_pem_x509_certificate(server_path.read_bytes()) if server_path.exists() else None
        failed = "transport: authentication handshake failed: tls: failed to verify certificate: x509: "
        if not _issued_by(server, client_ca) if server else daemon_ca != client_ca:
            raise BuildctlError(_unavailable(failed + "certificate signed by unknown authority"))
        if server is not None:
            names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = names.get_values_for_type(x509.DNSName)
            if host not in dns_names:
                raise BuildctlError(
                    _unavailable(f"{failed}certificate is valid for {', '.join(dns_names)}, not {host}")
                )
        alert = _client_alert(client_cert, daemon_ca)
        if alert:
            raise BuildctlError(_unavailable(f"error reading server preface: remote error: tls: {alert}"))

    def _read_context(self) -> tuple[str, dict[str, bytes]]:
        """The Dockerfile and the context's files, as the daemon reads them over the session (`--local`);
        a git context (`--opt context=`) is fetched by the daemon: its files are not known here."""
        locals_ = dict(value.partition("=")[::2] for value in option_values(self.args, "--local"))
        for name, folder in locals_.items():
            if not Path(folder).is_dir():
                missing = f"stat {folder}: no such file or directory"
                raise BuildctlError(f"failed to solve: local directory {name} ({folder}): {missing}")
        if "dockerfile" not in locals_:
            return "", {}
        filename = frontend_options(self.args).get("filename", "Dockerfile")
        path = Path(locals_["dockerfile"]) / filename
        if not path.is_file():
            raise BuildctlError(
                f"failed to solve: failed to read dockerfile: open {filename}: no such file or directory"
            )
        root = Path(locals_.get("context", locals_["dockerfile"]))
        files = {
            str(file.relative_to(root)): file.read_bytes()
            for file in sorted(root.rglob("*"))
            if file.is_file()
        }
        return path.read_text(), files

    def _hold(self, repository: str) -> Behaviour:
        """Print the first steps, mark the build started, and wait until the test releases it."""
        sys.stderr.write("#1 [internal] load build definition from Dockerfile\n")
        sys.stderr.flush()
        with _held_path(self.plan_dir, repository, "started").open("a") as marker:
            marker.write(f"{os.getpid()}\n")
        released = _held_path(self.plan_dir, repository, "release")
        while not released.exists():
            time.sleep(0.05)
        return released.read_text().strip() or "succeed"  # type: ignore[return-value]

    def _succeed(self, dockerfile: str, context: dict[str, bytes], *, cache_exported: bool) -> None:
        cache_metrics = option_values(self.args, "--debug-json-cache-metrics")
        if cache_metrics:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.log.append(
                f'time="{now}" level=info msg="writing JSON cache metrics to {cache_metrics[0]}"\n'
            )
        steps = _steps(dockerfile, self.args, context, self.mirrors)
        with _locked(self.plan_dir):
            known = set(json.loads(self.state.read_text())) if self.state.exists() else set()
        self._print_front(dockerfile, steps, context)
        cached = [step for step in steps if step.key in known]
        for step in steps:
            self._print_step(step, cached=step in cached)
        seed = hashlib.sha256(
            json.dumps([sorted(frontend_options(self.args).items()), [step.key for step in steps]]).encode()
        ).hexdigest()
        pushed = push_result(
            self.args, seed=seed, dockerfile=dockerfile, auth=self._auth(), mirrors=self.mirrors
        )
        self._print_export(pushed)
        cache_manifest = self._export_cache(steps, exported=cache_exported)
        sys.stderr.write("".join(self.log))
        with _locked(self.plan_dir):
            known = set(json.loads(self.state.read_text())) if self.state.exists() else set()
            self.state.write_text(json.dumps(sorted(known | {step.key for step in steps})))
        self._write_metadata(pushed, cache_manifest, steps)
        if cache_metrics:
            _write_atomically(Path(cache_metrics[0]), self._cache_metrics(steps, cached))

    def _auth(self) -> tuple[str, str] | None:
        """The push credentials, from `$DOCKER_CONFIG/config.json` as BuildKit's session reads them."""
        config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
        if not config.exists():
            return None
        registry = parse_image(output_names(self.args)[0]).registry
        credentials = credentials_from_docker_config(config.read_bytes(), registry)
        return (credentials.username, credentials.password) if credentials else None

    def _vertex(self, number: int, *lines: str) -> None:
        """One vertex's lines of BuildKit's plain progress, and the blank line after it."""
        self.log.append("".join(f"#{number} {line}\n" for line in lines) + "\n")

    def _next_vertex(self) -> int:
        self.vertex += 1
        return self.vertex

    def _print_front(self, dockerfile: str, steps: list[_Step], context: dict[str, bytes]) -> None:
        number = self._next_vertex()
        self.log.append(f"#{number} [internal] load build definition from Dockerfile\n")
        self.log.append(f"#{number} transferring dockerfile: {len(dockerfile.encode())}B done\n")
        self.log.extend(f"#{number} WARN: {warning}\n" for warning in check_warnings(dockerfile, self.args))
        self.log.append(f"#{number} DONE 0.0s\n\n")
        for step in steps:
            if step.is_from:
                number = self._next_vertex()
                ref = step.resolved.partition("@")[0]
                self.log.append(f"#{number} [internal] load metadata for {ref}\n#{number} DONE 0.0s\n\n")
        if context:
            number = self._next_vertex()
            self._vertex(
                number, "[internal] load .dockerignore", "transferring context: 2B done", "DONE 0.0s"
            )
        for value in option_values(self.args, "--import-cache"):
            self._print_import(csv_attributes(value).get("ref", ""))
        if context:
            number = self._next_vertex()
            size = sum(len(content) for content in context.values())
            transfer = f"transferring context: {size}B done"
            self._vertex(number, "[internal] load build context", transfer, "DONE 0.0s")

    def _print_import(self, ref: str) -> None:
        number = self._next_vertex()
        self.log.append(f"#{number} importing cache manifest from {ref}\n")
        if _exists(ref, self.mirrors):
            self.log.append(
                f"#{number} inferred cache manifest type: {OCI_MANIFEST} done\n#{number} DONE 0.0s\n\n"
            )
        else:  # a cold cache: BuildKit says so and builds on (buildkit.md)
            self.log.append(
                f"#{number} ERROR: failed to configure registry cache importer: {ref}: not found\n\n"
            )

    def _print_step(self, step: _Step, *, cached: bool) -> None:
        number = self._next_vertex()
        self.log.append(f"#{number} {step.name}\n")
        if step.is_from and not cached:
            self.log.append(f"#{number} resolve {step.resolved} done\n")
        self.log.append(f"#{number} CACHED\n\n" if cached else f"#{number} DONE 0.1s\n\n")

    def _print_export(self, pushed: PushedResult) -> None:
        number = self._next_vertex()
        self.log.append(f"#{number} exporting to image\n#{number} exporting layers 0.0s done\n")
        self.log.append(f"#{number} exporting manifest {pushed.digest} done\n")
        if pushed.config_digest:
            self.log.append(f"#{number} exporting config {pushed.config_digest} done\n")
        self.log.append(f"#{number} pushing layers 0.0s done\n")
        self.log.extend(
            f"#{number} pushing manifest for {name}@{pushed.digest} done\n"
            for name in output_names(self.args)
        )
        self.log.append(f"#{number} DONE 0.1s\n\n")

    def _export_cache(self, steps: list[_Step], *, exported: bool) -> str | None:
        """Push the cache to `--export-cache`'s ref (`ignore-error=true`: a failure only leaves
        `cache.manifest` out); the JSON descriptor of its manifest, or None."""
        exports = option_values(self.args, "--export-cache")
        if not exports:
            return None
        ref = csv_attributes(exports[0])["ref"]
        number = self._next_vertex()
        self.log.append(
            f"#{number} exporting cache to registry\n#{number} preparing build cache for export 0.0s done\n"
        )
        if not exported:
            self.log.append(
                f"#{number} ERROR: failed to push {ref}: unexpected status: 500 Internal Server Error\n\n"
            )
            return None
        image = parse_image(ref)
        layer = "\n".join(step.key for step in steps).encode()
        registry = self.mirrors.get(image.registry, image.registry)
        cache = push_image(registry, image.repository, image.tag, [layer], auth=self._auth())
        self.log.append(
            f"#{number} writing cache image manifest {cache.digest} done\n#{number} DONE 0.1s\n\n"
        )
        descriptor = {
            "mediaType": cache.media_type,
            "digest": cache.digest,
            "size": len(cache.manifest_bytes),
        }
        return json.dumps(descriptor, separators=(",", ":"))

    def _write_metadata(self, pushed: PushedResult, cache_manifest: str | None, steps: list[_Step]) -> None:
        paths = option_values(self.args, "--metadata-file")
        if not paths:
            return
        metadata: dict[str, Any] = {
            "containerimage.descriptor": pushed.descriptor,
            "containerimage.digest": pushed.digest,
            "image.name": ",".join(output_names(self.args)),
        }
        if pushed.config_digest:
            metadata["containerimage.config.digest"] = pushed.config_digest
        if cache_manifest is not None:
            metadata["cache.manifest"] = cache_manifest
        if "attest:provenance" in frontend_options(self.args):
            metadata["buildx.build.provenance"] = _provenance(steps, frontend_options(self.args))
        _write_atomically(Path(paths[0]), json.dumps(metadata, indent=2, sort_keys=True))

    def _cache_metrics(self, steps: list[_Step], cached: list[_Step]) -> str:
        """`--debug-json-cache-metrics`: one `cache miss:` line per missed step, last step first, then the
        summary (`cmd/buildctl/cachemetrics.go`; the shared samples)."""
        misses = [step for step in steps if not step.is_from and step not in cached]
        summary = {
            "total": self.vertex,
            "completed": self.vertex,
            "user_total": len(steps),
            "user_cached": len(cached),
            "user_completed": len(steps),
            "user_cacheable": sum(1 for step in steps if not step.is_from),
            "from": sum(1 for step in steps if step.is_from),
            "miss": len(misses),
            "client_duration_ms": round((time.monotonic() - self.started) * 1000),
        }
        lines = [f"cache miss: {step.name}" for step in reversed(misses)]
        return "\n".join([*lines, json.dumps(summary, separators=(",", ":"))]) + "\n"


def _unavailable(description: str) -> str:
    """A gRPC connection error as buildctl prints it (the Status stream is the first call to fail)."""
    return f'failed to get status: Unavailable: connection error: desc = "{description}"'


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - InvalidSignature and friends: not issued by it
        return False
    return True


def _client_alert(cert: x509.Certificate, daemon_ca: x509.Certificate) -> str | None:
    """The TLS alert Go's server (buildkitd) sends for this client certificate, or None when it accepts it."""
    if not _issued_by(cert, daemon_ca):
        return "unknown certificate authority"
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return "expired certificate"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None  # no EKU extension: any usage
    return None if ExtendedKeyUsageOID.CLIENT_AUTH in usages else "bad certificate"


def _exists(ref: str, mirrors: Mapping[str, str]) -> bool:
    image = parse_image(ref)
    if not image.registry.startswith(_TEST_REGISTRIES):
        return False
    try:
        tag_digest(mirrors.get(image.registry, image.registry), image.repository, image.tag)
    except httpx.HTTPStatusError:
        return False
    return True


def _write_atomically(path: Path, text: str) -> None:
    """As buildctl writes its files: a temporary file renamed over the target."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _provenance(steps: list[_Step], options: Mapping[str, str]) -> dict[str, Any]:
    materials = [
        {
            "uri": f"pkg:docker/{step.resolved.partition('@')[0]}",
            "digest": {"sha256": step.resolved.rpartition(":")[2]},
        }
        for step in steps
        if step.is_from
    ]
    return {
        "buildType": "https://mobyproject.org/buildkit@v1",
        "materials": materials,
        "invocation": {
            "configSource": {"entryPoint": options.get("filename", "Dockerfile")},
            "parameters": {"frontend": "dockerfile.v0"},
        },
    }


# ---------------------------------------------------------------------------------------------
# The Dockerfile's steps and their cache keys


@dataclass
class _Stage:
    index: int
    name: str | None
    base: str
    instructions: list[str]


def _parse_stages(dockerfile: str, build_args: Mapping[str, str]) -> list[_Stage]:
    """The stages, `${ARG}` in FROM resolved from the global ARGs and the build arguments."""
    global_args: dict[str, str] = {}
    stages: list[_Stage] = []
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            base = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(_Stage(len(stages), name, base, []))
        elif stages:
            stages[-1].instructions.append(line)
        elif keyword.upper() == "ARG":
            name, _, default = rest.strip().partition("=")
            global_args[name] = build_args.get(name, default)
    return stages


def _substitute(text: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def _needed(stages: list[_Stage], target: str | None) -> list[_Stage]:
    """The stages the target needs, dependencies first: BuildKit skips the others."""
    by_name = {stage.name: stage for stage in stages if stage.name} | {str(s.index): s for s in stages}
    order: list[_Stage] = []

    def visit(stage: _Stage) -> None:
        if stage in order:
            return
        sources = [stage.base] + [
            word.removeprefix("--from=")
            for line in stage.instructions
            for word in line.split()
            if word.startswith("--from=")
        ]
        for source in sources:
            if source in by_name and by_name[source] is not stage:
                visit(by_name[source])
        order.append(stage)

    if stages:
        visit(by_name.get(target or "", stages[-1]))
    return order


def _steps(
    dockerfile: str, args: Sequence[str], context: Mapping[str, bytes], mirrors: Mapping[str, str]
) -> list[_Step]:
    """The build's steps in build order, each with a cache key made from its parent's, its own text, the
    context for COPY and ADD, and the ARG values in scope: what BuildKit's cache keys depend on."""
    options = frontend_options(args)
    build_args = {
        key.removeprefix("build-arg:"): value
        for key, value in options.items()
        if key.startswith("build-arg:")
    }
    stages = _parse_stages(dockerfile, build_args)
    by_name = {stage.name: stage for stage in stages if stage.name}
    last_key: dict[int, str] = {}
    steps: list[_Step] = []
    for stage in _needed(stages, options.get("target")):
        label = stage.name or (f"stage-{stage.index}" if len(stages) > 1 else "")
        count = 1 + sum(1 for line in stage.instructions if line.split()[0].upper() in _STEP_KEYWORDS)
        prefix = f"[{label} " if label else "["
        parent = by_name.get(stage.base)
        if parent is not None:
            key = last_key[parent.index]
        elif stage.base == "scratch":
            key = "scratch"
        else:
            resolved = _resolve(stage.base, mirrors)
            key = f"from {resolved}"
            if all(step.key != key for step in steps):  # one vertex for the same base: BuildKit merges them
                steps.append(
                    _Step(f"{prefix}1/{count}] FROM {resolved}", key, is_from=True, resolved=resolved)
                )
        number = 1
        for line in stage.instructions:
            keyword = line.split()[0].upper()
            if keyword == "ARG":
                name, _, default = line.split(maxsplit=1)[1].partition("=")
                line = f"ARG {name}={build_args.get(name, default)}"  # noqa: PLW2901 - the value is what counts
            extra = _copied(line, context) if keyword in {"COPY", "ADD"} and "--from=" not in line else ""
            sources = [word.removeprefix("--from=") for word in line.split() if word.startswith("--from=")]
            extra += "".join(last_key[by_name[source].index] for source in sources if source in by_name)
            key = hashlib.sha256(f"{key}\n{line}\n{extra}".encode()).hexdigest()
            if keyword in _STEP_KEYWORDS:
                number += 1
                steps.append(_Step(f"{prefix}{number}/{count}] {line}", key))
        last_key[stage.index] = key
    return steps


def _copied(line: str, context: Mapping[str, bytes]) -> str:
    """The digest of the context files a COPY or ADD copies (its sources, or all for `.` or a pattern)."""
    sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
    whole = any(source in {".", "./"} or any(c in source for c in "*?[") for source in sources)
    prefixes = [source.strip("./") for source in sources]
    names = [
        name
        for name in sorted(context)
        if whole or any(name == prefix or name.startswith(f"{prefix}/") for prefix in prefixes)
    ]
    return hashlib.sha256(b"".join(name.encode() + b"\0" + context[name] for name in names)).hexdigest()


def _resolve(ref: str, mirrors: Mapping[str, str]) -> str:
    """`<ref>@<digest>` as BuildKit prints a FROM: the test registry's digest; any other registry cannot be
    reached from here, so its digest stands for the reference."""
    image = parse_image(ref)
    if not image.registry.startswith(_TEST_REGISTRIES):
        return f"{image}@sha256:{hashlib.sha256(str(image).encode()).hexdigest()}"
    try:
        digest = tag_digest(mirrors.get(image.registry, image.registry), image.repository, image.tag)
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            raise BuildctlError(
                f"failed to solve: {image}: failed to resolve source metadata for {image}: {image}: not found"
            ) from None
        raise
    return f"{image}@{digest}"
