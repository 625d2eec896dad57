"""Process-wide runtime settings (torch threads, the quieting of library logs and progress bars) and
what the process runs on."""

from proxytool.errors import ProxyToolError


def prepare_runtime(threads: int | None) -> None:
    """Quiet library progress bars and warnings, set the thread count."""
    import logging
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if threads is not None:
        if threads < 1:
            raise ProxyToolError(f"--threads must be >= 1 (got {threads})")
        torch.set_num_threads(threads)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; ``platform.processor()`` says only ``x86_64`` there)."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
