"""`python -m servicebuild` (or `servicebuild-operator`): run the operator against in-cluster config or the
current kubeconfig. `--help` lists the settings."""

import logging
from collections.abc import Sequence

import kopf

from servicebuild import command_line, handlers  # noqa: F401 - importing registers the handlers with Kopf
from servicebuild.api.models import GROUP
from servicebuild.config import Settings

_WATCH_GRACE_SECONDS = 5


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """Kopf configured explicitly: our own annotations, no chatty events, one replica."""
    operator = kopf.OperatorSettings()
    operator.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    operator.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    operator.posting.level = logging.WARNING
    operator.peering.standalone = True
    operator.networking.request_timeout = settings.api_timeout_seconds
    operator.watching.server_timeout = settings.watch_timeout_seconds
    # A watch connection silently dropped by a proxy would otherwise hang forever; the client gives up a
    # little after the server should have ended it, and Kopf watches again.
    operator.watching.client_timeout = settings.watch_timeout_seconds + _WATCH_GRACE_SECONDS
    operator.execution.max_workers = settings.workers
    return operator


def configure_logging(*, verbose: bool) -> None:
    """Kopf's logging, without its INFO line per handled object unless verbose: an object that needs no
    work costs no log line. The operator logs what it does (Jobs, transitions); Kopf's warnings stay."""
    kopf.configure(verbose=verbose)
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    """`argv` defaults to the process's arguments; settings are parsed (and `--help` answered) before
    anything talks to Kubernetes."""
    settings = command_line.settings_from_command_line(argv)
    configure_logging(verbose=settings.verbose)
    kopf.run(
        settings=kopf_settings(settings),
        memo=kopf.Memo(settings=settings),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=sorted(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
