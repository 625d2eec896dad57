"""Where proxytool keeps its registry and caches."""

import os
from pathlib import Path


def home() -> Path:
    """``$PROXYTOOL_HOME``, else ``$XDG_CONFIG_HOME/proxytool`` (default ``~/.config/proxytool``)."""
    if os.environ.get("PROXYTOOL_HOME"):
        return Path(os.environ["PROXYTOOL_HOME"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "proxytool"


def cache_dir() -> Path:
    """Converted models and installed packs: under ``$PROXYTOOL_HOME/cache`` when set, else XDG cache."""
    if os.environ.get("PROXYTOOL_HOME"):
        return home() / "cache"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "proxytool"
