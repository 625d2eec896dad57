"""Reading user files defensively: regular files only, a size bound, UTF-8 errors naming the line."""

from pathlib import Path

from proxytool.errors import ProxyToolError, at

DEFAULT_LIMIT = 4 * 2**30


def read_bytes(path, what: str = "input", limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of a regular file (or FIFO), refusing folders, devices (/dev/zero) and files over ``limit``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ProxyToolError(f"{at(path)}: is a folder, not a {what} file")
        if not path.exists():
            raise ProxyToolError(f"{at(path)}: no such {what} file")
        if not (path.is_file() or path.is_fifo()):
            raise ProxyToolError(f"{at(path)}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ProxyToolError(f"{at(path)}: cannot read {what} ({err.strerror or err})") from None
    if len(data) > limit:
        raise ProxyToolError(f"{at(path)}: larger than {limit // 2**20} MiB; not a {what} file")
    return data


def decode_utf8(data: bytes, name) -> str:
    """``data`` as text, or an error naming ``name:line`` of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ProxyToolError(f"{at(name, line)}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
