"""The commands of `kubectl servicebuild`, on click, printed with rich (colours only on a terminal and
without NO_COLOR). Errors a person can act on end with a message on stderr and exit code 1."""

import base64
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from click.shell_completion import get_completion_class
from rich.console import Console

from servicebuild import naming
from servicebuild.api.models import GROUP, KIND, VERSION
from servicebuild.cli import views
from servicebuild.cli.context import ARCHIVE_KEY, ContextTooLargeError, PackedContext, pack
from servicebuild.cli.follow import Ending, Target, watch
from servicebuild.cli.gateway import PersonKube
from servicebuild.kube import KubeError
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.status import human_size
from servicebuild.times import format_time

PROG = "kubectl-servicebuild"
COMPLETE_VAR = "_KUBECTL_SERVICEBUILD_COMPLETE"
FIELD_MANAGER = "kubectl-servicebuild"
GITOPS_MANAGERS = ("argocd", "kustomize-controller", "helm-controller")
"""Field managers of GitOps tools (Argo CD's controllers, Flux's): a change they did not make is reverted."""
GITOPS_MARKS = ("argocd.argoproj.io/", "kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/")
"""Label and annotation prefixes with which Argo CD and Flux mark what they manage."""

_Command = TypeVar("_Command", bound=Callable[..., Any])


@dataclass
class Session:
    """The kubeconfig context and namespace a command acts in; connects on first use."""

    context: str | None
    namespace_given: str | None
    _kube: tuple[PersonKube, str] | None = field(default=None, init=False)

    def _connect(self) -> tuple[PersonKube, str]:
        if self._kube is None:
            self._kube = PersonKube.from_kubeconfig(self.context)
        return self._kube

    @property
    def kube(self) -> PersonKube:
        return self._connect()[0]

    @property
    def namespace(self) -> str:
        return self.namespace_given or self._connect()[1]

    def servicebuild(self, name: str) -> dict[str, Any]:
        body = self.kube.get_servicebuild(self.namespace, name)
        if body is None:
            raise click.ClickException(f'servicebuild "{name}" not found in namespace "{self.namespace}"')
        return body


def _console() -> Console:
    console = Console(highlight=False)
    # A pipe gets whole lines: scripts read them, nothing wraps at 80 columns.
    return console if console.is_terminal else Console(highlight=False, width=250)


def _complete_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    try:
        session = Session(ctx.params.get("context"), ctx.params.get("namespace"))
        names = [item["metadata"]["name"] for item in session.kube.list_servicebuilds([session.namespace])]
    except (KubeError, KeyError):
        return []
    return sorted(name for name in names if name.startswith(incomplete))


def _session_command(command: _Command) -> _Command:
    """The options every command takes, as kubectl's: --context and -n/--namespace."""

    @click.option("--context", help="The kubeconfig context; default: the current one.")
    @click.option("-n", "--namespace", help="The namespace; default: the context's.")
    @functools.wraps(command)
    def wrapper(context: str | None, namespace: str | None, **kwargs: Any) -> Any:
        try:
            return command(Session(context, namespace), **kwargs)
        except KubeError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


NAME = click.argument("name", shell_complete=_complete_names)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build images in the cluster with the servicebuild operator."""


@cli.command("list")
@_session_command
@click.option("-A", "--all-namespaces", is_flag=True, help="ServiceBuilds of every namespace.")
@click.option("-o", "--output", type=click.Choice(["json", "yaml"]), help="The objects, for scripts.")
def list_command(session: Session, *, all_namespaces: bool, output: str | None) -> None:
    """The ServiceBuilds: readiness, image, size, cache use, build number, age."""
    items = session.kube.list_servicebuilds([] if all_namespaces else [session.namespace])
    items.sort(key=lambda item: (item["metadata"].get("namespace", ""), item["metadata"]["name"]))
    if output:
        click.echo(views.document(items, output), nl=False)
    elif not items:
        scope = "any namespace" if all_namespaces else f"namespace {session.namespace}"
        click.echo(f"No ServiceBuilds in {scope}.", err=True)
    else:
        _console().print(views.list_table(items, datetime.now(UTC), all_namespaces=all_namespaces))


@cli.command()
@_session_command
@NAME
def status(session: Session, name: str) -> None:
    """One ServiceBuild: phase and why, image, cache, findings, failure, last builds."""
    _console().print(views.status_screen(session.servicebuild(name)))


@cli.command()
@_session_command
@NAME
def history(session: Session, name: str) -> None:
    """The finished builds, newest first."""
    records = views.parse_status(session.servicebuild(name)).history
    if not records:
        click.echo(f"servicebuild {name} has no finished build yet.")
        return
    _console().print(views.history_table(records))


@cli.command()
@_session_command
@NAME
@click.option("-f", "--follow", is_flag=True, help="Follow a running build's log to its end.")
@click.option("--build", "number", type=int, help="Another build than the last, by number.")
def logs(session: Session, name: str, *, follow: bool, number: int | None) -> None:
    """The build's BuildKit log."""
    status = views.parse_status(session.servicebuild(name))
    number = status.build if number is None else number
    record = next((item for item in status.history or [] if item.build == number), None)
    job_name = status.job_name if number == status.build else record.job_name if record else None
    if number is None or job_name is None:
        raise click.ClickException(
            f"servicebuild {name} has no build {number or ''} with a Job".replace("  ", " ")
        )
    pod = session.kube.get_job_pod(session.namespace, job_name)
    lines = pod and session.kube.stream_pod_log(
        session.namespace, pod["metadata"]["name"], BUILD_CONTAINER, follow=follow
    )
    if lines:
        for line in lines:
            click.echo(line, nl=False)
        return
    if number == status.build and status.log_tail:
        click.echo(status.log_tail.rstrip("\n"))
        click.echo(
            f"(the Pod of build {number} is gone: these are the last lines the operator kept)", err=True
        )
        return
    raise click.ClickException(f"the Pod of build {number} is gone, and its log with it")


@cli.command()
@_session_command
@NAME
def rebuild(session: Session, name: str) -> None:
    """Ask for a new build of the same spec and source."""
    session.servicebuild(name)
    requested = format_time(datetime.now(UTC))
    session.kube.annotate_servicebuild(session.namespace, name, {naming.ANNOTATION_REQUESTED_AT: requested})
    click.echo(f"servicebuild/{name} rebuild requested")


@cli.command()
@_session_command
@NAME
@click.option("--timeout", type=float, help="Give up after this many seconds (exit code 2).")
def wait(session: Session, name: str, *, timeout: float | None) -> None:
    """Wait until the build has ended: exit code 0 Ready, 1 Stalled, 2 timed out."""
    session.servicebuild(name)
    _follow(session, Target(session.namespace, name), timeout=timeout, verbose=False)


def _follow(session: Session, target: Target, *, timeout: float | None, verbose: bool) -> None:
    """Show the build's progress until it ends (live on a terminal, a line per change with `verbose`),
    then its result; exit with `Ending`'s code."""
    console = _console()
    if console.is_terminal:
        with console.status(f"servicebuild/{target.name}") as spinner:
            result, body = watch(session.kube, target, spinner.update, timeout)
    else:
        result, body = watch(session.kube, target, click.echo if verbose else _ignore, timeout)
    status = views.parse_status(body)
    if result is Ending.READY and status.output is not None:
        click.echo(f"{status.output.image} ({status.output.size})")
    elif result is Ending.STALLED:
        console.print(views.status_screen(body, history_shown=0))
    elif result is Ending.TIMED_OUT:
        click.echo(
            f"servicebuild/{target.name}: still {status.phase or 'waiting'} after {timeout:g}s", err=True
        )
    sys.exit(int(result))


def _ignore(_line: str) -> None:
    return None


@cli.command()
@_session_command
@NAME
@click.option(
    "--from-dir", "folder", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--image", help="The image to push, registry/repository:tag; needed for a new ServiceBuild.")
@click.option("--dockerfile", help="The Dockerfile's path inside the folder; default: Dockerfile.")
@click.option("--target", help="The Dockerfile stage to build; default: the last.")
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="An ARG value; repeatable."
)
@click.option("-f", "--follow", is_flag=True, help="Show progress until Ready (exit 0) or Stalled (exit 1).")
def build(  # noqa: PLR0913 - one parameter per option, as click passes them
    session: Session,
    name: str,
    *,
    folder: Path,
    image: str | None,
    dockerfile: str | None,
    target: str | None,
    build_args: tuple[str, ...],
    follow: bool,
) -> None:
    """Build the folder: pack it (honouring .dockerignore) into ConfigMap NAME-context and point the
    ServiceBuild at it, creating either when missing."""
    try:
        packed = pack(folder, dockerfile or "Dockerfile")
    except ContextTooLargeError as exc:
        raise click.ClickException(str(exc)) from exc
    existing = session.kube.get_servicebuild(session.namespace, name)
    if existing is None and image is None:
        raise click.ClickException(f"servicebuild {name} does not exist yet: give --image to create it")
    if existing is not None:
        _check_changeable(existing)
    spec = _spec(name, image, dockerfile, target, _parse_build_args(build_args))
    configmap = _configmap(session.namespace, name, packed)
    session.kube.put_configmap(configmap)
    if existing is None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": session.namespace},
            "spec": spec,
        }
        session.kube.create_servicebuild(body)
    else:
        # A ConfigMap source of another name, or with keys as files, becomes this one.
        session.kube.patch_servicebuild(session.namespace, name, {"spec": spec})
    size = human_size(len(packed.archive))
    done = "configured" if existing else "created"
    click.echo(f"servicebuild/{name} {done}: {len(packed.files)} files ({size}) in configmap/{name}-context")
    if follow:
        digest = naming.context_digest({}, configmap["binaryData"])
        _follow(session, Target(session.namespace, name, digest), timeout=None, verbose=True)


def _parse_build_args(pairs: tuple[str, ...]) -> dict[str, str]:
    parsed = dict(pair.partition("=")[::2] for pair in pairs)
    malformed = [pair for pair in pairs if "=" not in pair]
    if malformed:
        raise click.BadParameter(f"{malformed[0]!r} is not KEY=VALUE", param_hint="--build-arg")
    return parsed


def _spec(
    name: str, image: str | None, dockerfile: str | None, target: str | None, build_args: dict[str, str]
) -> dict[str, Any]:
    """The spec fields the command sets; the others stay as they are."""
    spec: dict[str, Any] = {"source": {"configMap": {"name": f"{name}-context", "archive": ARCHIVE_KEY}}}
    if image:
        spec["output"] = {"image": image}
    optional = {"dockerfile": dockerfile, "target": target, "buildArgs": build_args or None}
    return spec | {key: value for key, value in optional.items() if value is not None}


def _configmap(namespace: str, name: str, packed: PackedContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-context",
            "namespace": namespace,
            "labels": {naming.LABEL_MANAGED_BY: FIELD_MANAGER},
        },
        "binaryData": {ARCHIVE_KEY: base64.b64encode(packed.archive).decode()},
    }


def _check_changeable(body: dict[str, Any]) -> None:
    """Refuse to turn a git build into a folder build; warn when a GitOps tool will revert the change."""
    name = body["metadata"]["name"]
    if ((body.get("spec") or {}).get("source") or {}).get("git"):
        raise click.ClickException(
            f"servicebuild {name} builds from git; not turning it into a folder build (delete it, or use "
            "another name)"
        )
    metadata = body["metadata"]
    managers = [entry.get("manager", "") for entry in metadata.get("managedFields") or []]
    marks = [*(metadata.get("labels") or {}), *(metadata.get("annotations") or {})]
    tool = next((m for m in managers if m.startswith(GITOPS_MANAGERS)), None) or next(
        (mark for mark in marks if mark.startswith(GITOPS_MARKS)), None
    )
    if tool:
        click.echo(
            f"Warning: servicebuild {name} is managed by a GitOps tool ({tool}): it may revert this change.",
            err=True,
        )


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion(shell: str) -> None:
    """The completion script for bash or zsh, e.g. `source <(kubectl-servicebuild completion bash)`."""
    completer = get_completion_class(shell)
    if completer is None:  # click ships both
        raise click.ClickException(f"no completion for {shell}")
    click.echo(completer(cli, {}, PROG, COMPLETE_VAR).source())


def main() -> None:
    """The `kubectl-servicebuild` console script."""
    cli.main(prog_name=PROG, complete_var=COMPLETE_VAR)
