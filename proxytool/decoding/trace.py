"""What the proxy changes, token by token: each role's top candidates and log-probabilities (JSONL).

A :class:`Tracer` observes :func:`proxytool.decoding.generate.generate` (its ``observe`` hook) and,
when a batch is done, writes one line per generated token of each prompt:

    {"id", "step", "token_id", "token",
     "logprob": {"base": ..., "expert": ..., "anti-expert": ..., "proxy": ...},   # of the chosen token
     "top": {"base": [[token, id, logprob], ...], ..., "proxy": [...]}}

"proxy" is the combined distribution the token was drawn from (untempered); the roles are named as in
:meth:`proxytool.decoding.roles.ProxyModels.roles` (numbered when there are several pairs).
"""

import json
from collections.abc import Sequence

import torch


class Tracer:
    """Buffers each step's candidates for the current batch; ``flush`` writes the rows' kept tokens."""

    def __init__(self, sink, tokenizer, top: int = 5):
        self.sink, self.tokenizer, self.top = sink, tokenizer, top
        self.steps: list[list[dict]] = []  # per step, per row

    def observe(self, stepper, scores: torch.Tensor, tokens: torch.Tensor) -> None:
        width = scores.shape[-1]
        dists = {name: logits[:, -1] if logits.dim() == 3 else logits for name, logits in stepper.role_logits().items()}
        dists = {name: torch.log_softmax(t[:, :width].float(), dim=-1) for name, t in dists.items()}
        dists["proxy"] = torch.log_softmax(scores.float(), dim=-1)
        chosen = tokens.tolist()
        rows = []
        for i, token in enumerate(chosen):
            rows.append(
                {
                    "token_id": token,
                    "logprob": {name: round(d[i, token].item(), 4) for name, d in dists.items()},
                    "top": {name: self._top(d[i]) for name, d in dists.items()},
                }
            )
        self.steps.append(rows)

    def _top(self, logp: torch.Tensor) -> list:
        values, ids = logp.topk(min(self.top, logp.shape[-1]))
        return [[self.tokenizer.decode([t]), t, round(v, 4)] for t, v in zip(ids.tolist(), values.tolist())]

    def flush(self, ids: Sequence[str], kept: Sequence[int]) -> None:
        """Write the traced steps of each row (``kept[i]`` tokens of row ``i``), then start a new batch."""
        for i, (item_id, n) in enumerate(zip(ids, kept)):
            for step, rows in enumerate(self.steps[:n]):
                record = {"id": item_id, "step": step, "token_id": rows[i]["token_id"]}
                record["token"] = self.tokenizer.decode([rows[i]["token_id"]])
                record.update(logprob=rows[i]["logprob"], top=rows[i]["top"])
                self.sink.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.sink.flush()
        self.steps = []
