"""Measure `combine.plausible_only` before it is wired into the engine: `proxytool` with each proxy step's
scores restricted to the tokens the base finds plausible (base probability >= MIN_RATIO x its top token's).

Usage (same arguments as `proxytool`):  MIN_RATIO=0.01 python examples/plausible_eval.py eval --task polls ...

It wraps `proxytool.decoding.generate.step_scores`; nothing else changes. Measurement only: once the
engine has an option for it, use that instead.
"""

import os

from proxytool.decoding import generate
from proxytool.decoding.combine import plausible_only

MIN_RATIO = float(os.environ.get("MIN_RATIO", "0.01"))
_step_scores = generate.step_scores


def _plausible_step_scores(models, logits):
    scores = _step_scores(models, logits)
    if not models.pairs:
        return scores
    base = logits[id(models.base.source)][models.base.group]
    return plausible_only(scores, base, MIN_RATIO)


generate.step_scores = _plausible_step_scores

if __name__ == "__main__":
    from proxytool.cli import app

    app()
