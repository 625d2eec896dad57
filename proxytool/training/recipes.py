"""Training recipes: YAML files of :class:`~proxytool.training.config.TrainConfig` values.

Bundled recipes live in the repository's ``recipes/<model-or-family>/<method>.yaml`` and are named
by that relative path without ``.yaml`` (``distilgpt2/polls-lora``); any other YAML file can be given
by path. Each file starts with comment lines: a one-line description, optionally ``# Needs: <command>``
(how to build its data) and ``# Run: <command>`` (the exact command that runs it). Relative paths in
a recipe (``data``, ``output``, ...) are relative to the folder the command is run from, which the
``Run`` line says.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from proxytool.errors import ProxyToolError, at
from proxytool.training.config import TrainConfig, build_config


@dataclass(frozen=True)
class Recipe:
    """A loaded, validated recipe.

    Attributes:
        name: ``family/method`` for a bundled recipe, else the path as given.
        path: The YAML file.
        values: Its config values (keys and types already checked against TrainConfig).
        description: The first header comment line.
        needs: The ``# Needs:`` command (data preparation), if any.
        command: The ``# Run:`` command.
    """

    name: str
    path: Path
    values: dict
    description: str = ""
    needs: str | None = None
    command: str | None = None


def recipes_dir() -> Path:
    """The recipes shipped inside the package (``proxytool/recipes/``)."""
    return Path(str(resources.files("proxytool"))) / "recipes"


def list_recipes() -> list[Recipe]:
    """Every bundled recipe, sorted by name."""
    root = recipes_dir()
    return [load_recipe(path) for path in sorted(root.glob("**/*.yaml"))] if root.is_dir() else []


def find_recipe(name_or_path: str | Path) -> Path:
    """The YAML file of a bundled recipe name or a path.

    Raises:
        ProxyToolError: Neither a file nor a bundled recipe; suggests close names.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = recipes_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = [_bundled_name(p) for p in sorted(recipes_dir().glob("**/*.yaml"))]
    close = difflib.get_close_matches(str(name_or_path), names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `proxytool recipes list`"
    raise ProxyToolError(f"no recipe '{name_or_path}': not a file or a bundled recipe name; {hint}")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load and validate a recipe (unknown keys and bad types fail here, naming the key).

    Args:
        name_or_path: A bundled name (``distilgpt2/polls-lora``) or a YAML path.

    Returns:
        The recipe.
    """
    path = find_recipe(name_or_path)
    from proxytool.files.reading import decode_utf8, read_bytes

    text = decode_utf8(read_bytes(path, "recipe", 16 * 2**20), path)
    try:
        values = yaml.safe_load(text)
    except RecursionError:
        raise ProxyToolError(f"{at(path)}: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ProxyToolError(f"{at(path, line)}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ProxyToolError(f"{at(path)}: a recipe must be a mapping of config keys, got {type(values).__name__}")
    build_config(TrainConfig, (str(path), values))
    header = _header(text)
    return Recipe(
        name=_bundled_name(path),
        path=path,
        values=values,
        description=header.get("", ""),
        needs=header.get("needs"),
        command=header.get("run"),
    )


def _bundled_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(recipes_dir()).with_suffix(""))
    except ValueError:
        return str(path)


def _header(text: str) -> dict[str, str]:
    """Leading comment lines: the first plain one is the description; ``Needs:``/``Run:`` are commands."""
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        key, sep, rest = body.partition(":")
        if sep and key.lower() in ("needs", "run"):
            header[key.lower()] = rest.strip()
        elif body and "" not in header:
            header[""] = body
    return header
