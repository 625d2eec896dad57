"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class ProxyToolError(Exception):
    """A problem the user can fix (bad input, missing model, bad flag value)."""


def at(path, line: int | None = None, field: str | None = None) -> str:
    """Format a location as ``file:line: field`` for error messages."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if field is not None:
        where += f": field '{field}'"
    return where
