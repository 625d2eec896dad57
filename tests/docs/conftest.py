import pytest


def pytest_collection_modifyitems(config, items):
    """`scripts` tests run only when asked for (`pytest -m scripts`): they take minutes."""
    if "scripts" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: run with -m scripts")
    for item in items:
        if "scripts" in item.keywords:
            item.add_marker(skip)
