"""The public Python API: ``from proxytool import ProxyTuned, ProxyLogitsProcessor`` (docs/python.md).

What the CLI calls too: it builds a setup from its flags and loads it through ``ProxyTuned.from_setup``.
"""

from proxytool.api.processor import GivenScores, ProxyLogitsProcessor
from proxytool.api.results import Generation, NextTokenScores
from proxytool.api.tuned import ProxyTuned
from proxytool.decoding.formats import TokenPrompt

__all__ = ["Generation", "GivenScores", "NextTokenScores", "ProxyLogitsProcessor", "ProxyTuned", "TokenPrompt"]
