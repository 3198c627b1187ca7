"""Times as the Kubernetes API writes them: RFC 3339 in UTC, whole seconds. Inside, every time is an
aware `datetime`; strings exist only at the API boundary (status, Job and Pod fields, tags)."""

from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    """`2026-11-28T10:15:00Z`: metav1.Time's form (UTC, no fraction)."""
    return moment.astimezone(UTC).strftime(_FORMAT)


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time from the API; None when absent or not a time (nothing the API server wrote)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def compact_time(moment: datetime) -> str:
    """`20261128101500`: a sortable tag fragment (UTC)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def whole_seconds(moment: datetime) -> datetime:
    """`moment` as precise as the API keeps times, so that a time written and read back compares equal."""
    return moment.astimezone(UTC).replace(microsecond=0)
