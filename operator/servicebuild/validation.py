"""Turn pydantic validation errors into messages that name the field, for users."""

from pydantic import ValidationError

MAX_ECHOED = 64
"""Longest piece of user input (a key, a value) a message repeats: the status must stay small whatever
the spec holds (a build argument's name, which the CRD cannot bound, may be megabytes long)."""
MAX_CLAUSE = 256
MAX_CLAUSES = 8


def _shortened(text: str, limit: int = MAX_ECHOED) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _field_path(location: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{_shortened(part)}"
    return path


def describe_validation_error(error: ValidationError, *, prefix: str) -> str:
    """`spec.output.image: ...; spec.timeout: ...`, one clause per problem (the first few), each short."""
    problems = error.errors(include_url=False)
    clauses = []
    for problem in problems[:MAX_CLAUSES]:
        location = tuple(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "string_pattern_mismatch":
            message = f"{_shortened(repr(problem['input']))} is not in the expected format"
        clauses.append(f"{_field_path(location, prefix)}: {_shortened(message, MAX_CLAUSE)}")
    if len(problems) > MAX_CLAUSES:
        clauses.append(f"and {len(problems) - MAX_CLAUSES} more")
    return "; ".join(clauses)
