import pytest


def pytest_collection_modifyitems(config, items):
    """`launchers` tests run only when asked for (`pytest -m launchers`): each starts 2 processes (~20 s)."""
    if "launchers" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: run with -m launchers")
    for item in items:
        if "launchers" in item.keywords:
            item.add_marker(skip)
