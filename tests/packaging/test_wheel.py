"""A normal (non-editable) install carries everything: recipes and static files are package data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_every_recipe_and_lists_them_when_installed(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("proxytool-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {str(p.relative_to(ROOT)) for p in (ROOT / "proxytool" / "recipes").glob("*/*.yaml")}
    assert recipes and recipes <= names
    static = {str(p.relative_to(ROOT)) for p in (ROOT / "proxytool").glob("serving/static/*")}
    assert static <= names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    listed = subprocess.run(
        [sys.executable, "-c", "from proxytool.training.recipes import list_recipes; print(len(list_recipes()))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # away from the source tree
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert listed.returncode == 0, listed.stderr
    assert int(listed.stdout) == len(recipes)
