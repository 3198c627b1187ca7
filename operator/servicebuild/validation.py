"""Turn pydantic validation errors into messages that name the field, for users."""

from pydantic import ValidationError


def _field_path(location: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe_validation_error(error: ValidationError, *, prefix: str) -> str:
    """`spec.output.image: ...; spec.timeout: ...`, one clause per problem."""
    clauses = []
    for problem in error.errors(include_url=False):
        location = tuple(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "string_pattern_mismatch":
            message = f"{problem['input']!r} is not in the expected format"
        clauses.append(f"{_field_path(location, prefix)}: {message}")
    return "; ".join(clauses)
