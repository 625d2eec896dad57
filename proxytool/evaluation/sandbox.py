"""Run model-written Python (HumanEval) as isolated as this OS allows. Opt-in: ``--allow-code-execution``.

Layers, each used when available (``isolation()`` says which):

1. ``bwrap`` (bubblewrap): new user, network, PID and IPC namespaces, the root filesystem mounted
   read-only, a private writable temp folder as HOME and cwd. No network, no writes outside it.
2. else ``unshare`` with user namespaces: new network (no interfaces but a down loopback), PID and
   IPC namespaces. No network; the program can still read and write whatever your user can.
3. always: a fresh temp folder as HOME/TMPDIR/cwd, a minimal environment, ``python -I``, limits set
   with ``resource.setrlimit`` (address space, CPU seconds, file size, no core dumps, process count),
   a wall-clock timeout that kills the whole process group, and a Python-level guard that disables
   sockets and process creation (an accident guard: ``ctypes`` gets around it, the namespaces do not
   care).

It does not protect against: kernel exploits, reading your files (layer 2/3 only), using up disk
in the temp folder up to the file-size limit, or anything when neither bwrap nor unshare works
(then only layer 3 stands). Run untrusted generations in a container or VM.
"""

import functools
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs before the candidate code in the child process: a guard against accidents (a model that
# writes a network call, a fork bomb or ``exit(0)``), not a security boundary.
GUARD = r"""
import os, socket, _socket, subprocess, sys

def _refuse(*args, **kwargs):
    raise OSError("disabled while evaluating generated code")

class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _refuse()

class _NoRawSocket(_socket.socket):
    def __init__(self, *args, **kwargs):
        _refuse()

socket.socket = socket.SocketType = _NoSocket
_socket.socket = _socket.SocketType = _NoRawSocket
for _mod in (socket, _socket):
    for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                  "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _refuse)
for _name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp",
              "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp",
              "spawnvpe", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, _refuse)
subprocess.Popen = _refuse
subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = _refuse

_marker, _program = sys.argv[1], sys.argv[2]
with open(_program, encoding="utf-8") as _f:
    _code = compile(_f.read(), _program, "exec")
_done = open(_marker, "w", encoding="utf-8")  # opened before the candidate can tamper with open()
_nonce = os.environ.pop("PROXYTOOL_NONCE")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
_done.write(_nonce)
_done.close()
"""

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--ipc", "--pid", "--fork", "--kill-child"]


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def isolation() -> str:
    """ "bwrap", "unshare" or "none": the strongest namespace isolation that works here."""
    if os.environ.get("PROXYTOOL_SANDBOX") in ("bwrap", "unshare", "none"):
        return os.environ["PROXYTOOL_SANDBOX"]
    if not sys.platform.startswith("linux"):
        return "none"
    if shutil.which("bwrap") and _works(_bwrap_prefix("/tmp") + ["true"]):
        return "bwrap"
    if shutil.which("unshare") and _works(UNSHARE + ["true"]):
        return "unshare"
    return "none"


def _bwrap_prefix(folder: str) -> list[str]:
    return [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--bind", folder, folder, "--chdir", folder,
    ]  # fmt: skip


def _limit_resources(max_memory_mb: int, cpu_seconds: int) -> None:
    """preexec_fn: cap address space, CPU time, file size, processes and core dumps of the child (Linux)."""
    import resource

    mem = max_memory_mb * 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_DATA, mem),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, 16 * 1024 * 1024),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):  # the hard limit is lower already, or the platform lacks it
            pass


def run_python(program: str, timeout: float = 5.0, max_memory_mb: int = 1024) -> tuple[bool, str]:
    """Run ``program`` isolated; it passes if it exits 0 *and* reaches its end (``exit(0)`` does not pass).

    Returns:
        ``(passed, reason)``; reason is ``"passed"``, ``"timed out"`` or the last line of the
        child's stderr (e.g. ``"AssertionError"``).
    """
    with tempfile.TemporaryDirectory(prefix="proxytool-sandbox-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "program.py").write_text(program, encoding="utf-8")
        marker = tmpdir / "passed"
        nonce = secrets.token_hex(16)
        env = {
            "PATH": os.defpath,
            "HOME": tmp,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "PROXYTOOL_NONCE": nonce,
        }
        command = [sys.executable, "-I", "-c", GUARD, str(marker), str(tmpdir / "program.py")]
        kind = isolation()
        if kind == "bwrap":
            command = _bwrap_prefix(tmp) + command
        elif kind == "unshare":
            command = UNSHARE + command
        preexec = None
        if sys.platform.startswith("linux"):
            preexec = functools.partial(_limit_resources, max_memory_mb, max(1, math.ceil(timeout) + 1))
        with open(tmpdir / "stdout", "wb") as out, open(tmpdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                command,
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=preexec,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Kill the whole session (the child leads it) while it is still unreaped, so the
                # group id cannot belong to anyone else.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
                proc.wait()
                return False, "timed out"
        passed = proc.returncode == 0 and marker.exists() and marker.read_text(errors="replace") == nonce
        if passed:
            return True, "passed"
        lines = (tmpdir / "stderr").read_text(errors="replace").strip().splitlines()
        return False, (lines[-1] if lines else f"exit code {proc.returncode}")
