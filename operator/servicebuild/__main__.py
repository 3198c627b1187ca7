"""`python -m servicebuild` (or `servicebuild-operator`): run the operator against in-cluster config or the
current kubeconfig. `--help` lists the settings, `--version` prints the version."""

import logging
from collections.abc import Sequence

import kopf

from servicebuild import command_line, handlers  # noqa: F401 - importing registers the handlers with Kopf
from servicebuild.config import Settings

_WATCH_GRACE_SECONDS = 5


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """Kopf configured explicitly: no chatty events, no Kopf peering (the operator elects its leader on a
    Lease). Its handlers are event and index handlers only, which keep no progress on the objects."""
    operator = kopf.OperatorSettings()
    operator.posting.level = logging.WARNING
    operator.peering.standalone = True
    operator.networking.request_timeout = settings.api_timeout_seconds
    operator.watching.server_timeout = settings.watch_timeout_seconds
    # A watch connection silently dropped by a proxy would otherwise hang forever; the client gives up a
    # little after the server should have ended it, and Kopf watches again.
    operator.watching.client_timeout = settings.watch_timeout_seconds + _WATCH_GRACE_SECONDS
    operator.execution.max_workers = settings.workers
    # Kopf's first LIST stays in one piece (watching.chunk_size unset): until every object is indexed, each
    # one listed or indexed wakes all those waiting for the indexes, and pages let more of them wait. Its
    # per-object worker limit stays unset too: below the number of indexed objects it deadlocks that first
    # listing (kopf#1243), and it would delay events, not drop their bodies.
    return operator


def configure_logging(*, verbose: bool, log_format: str = "text") -> None:
    """Kopf's logging, without its INFO line per handled object unless verbose: an object that needs no
    work costs no log line. The operator logs what it does (Jobs, transitions); Kopf's warnings stay.

    `json` is Kopf's JSON format: the fields a record carries (`extra`) become the object's fields."""
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    )
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    """`argv` defaults to the process's arguments; settings are parsed (and `--help` answered) before
    anything talks to Kubernetes."""
    settings = command_line.settings_from_command_line(argv)
    configure_logging(verbose=settings.verbose, log_format=settings.log_format)
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
