"""The examples in the public API's docstrings run as doctests on the tiny models."""

import doctest
import importlib

import pytest

MODULES = ["proxytool.api.tuned", "proxytool.api.processor"]


def _examples():
    finder = doctest.DocTestFinder()
    return [t for name in MODULES for t in finder.find(importlib.import_module(name)) if t.examples]


EXAMPLES = _examples()


def test_every_public_class_has_an_example():
    names = {t.name.rsplit(".", 1)[-1] for t in EXAMPLES}
    assert {"ProxyTuned", "ProxyLogitsProcessor", "from_models", "stream", "next_token_scores"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(example, tiny_models):
    import proxytool

    example.globs.update(
        base=str(tiny_models["base"]),
        expert=str(tiny_models["expert"]),
        anti=str(tiny_models["anti"]),
        ProxyTuned=proxytool.ProxyTuned,
        ProxyLogitsProcessor=proxytool.ProxyLogitsProcessor,
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(example, out=lambda text: pytest.fail(text, pytrace=False))
    assert runner.failures == 0
