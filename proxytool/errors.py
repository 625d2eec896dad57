"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class ProxyToolError(Exception):
    """A problem the user can fix (bad input, missing model, bad flag value).

    ``exit_code`` is 2 (bad input); a subclass for a run that failed on valid input uses 1.
    """

    exit_code = 2


class RunFailed(ProxyToolError):
    """A run that failed on valid input (disk full, training diverged): exit code 1, not 2."""

    exit_code = 1


def at(path, line: int | None = None, field: str | None = None) -> str:
    """Format a location as ``file:line: field`` for error messages."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if field is not None:
        where += f": field '{field}'"
    return where
