"""Atomic file writes: a temp file in the same folder, then rename. Readers never see half a file."""

import contextlib
import os
import tempfile
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (fsynced temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def files_into(folder: Path):
    """Yield a temp folder inside ``folder``; on success each file written there is renamed into
    ``folder`` whole (for writers that take a folder, e.g. ``save_pretrained``). On error nothing moves."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".writing-", dir=folder) as tmp:
        yield Path(tmp)
        for path in Path(tmp).iterdir():
            os.replace(path, folder / path.name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
