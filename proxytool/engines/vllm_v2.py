"""Proxy-tuning inside vLLM's Model Runner V2 (the GPU runner's own logits-processor interface).

Same steering as engines/vllm.py (engines/steering.py: the ``PROXYTOOL_VLLM_*`` variables, each
request's α, the pair's state, the combine), driven through MRV2's calls instead of V1's:

- ``add_request(slot, params)`` when a request takes a slot (slots are recycled and vLLM says nothing
  when a request leaves: the call replaces the slot's previous occupant). Returns whether the request
  is steered (α = 0 for every pair: False, and vLLM may skip the processor for batches of such).
- ``apply_staged_writes()`` once per step before the forward: the pair's state of requests that no
  ``apply`` named during the previous step goes (ended, preempted, or not scheduled: a request that
  returns is prefilled again).
- ``apply(logits, ctx)``: ``logits`` rows are not requests. ``ctx.expanded_idx_mapping`` maps each row
  to its slot, ``ctx.expanded_local_pos`` gives its place among its request's rows, ``ctx.input_ids``
  and ``ctx.pos`` the token fed at the row's position and that position. Under speculative decoding a
  request with k draft tokens owns k + 1 rows: row 0 scores the token after its committed tokens
  (``req_states.all_token_ids[slot, :pos + 1]``, its last one fed at row 0), row j the token after those
  and drafts 1..j (row j's input is draft j). The pair scores every row the same way; the drafts are
  truncated from its state at once (engines/pair_batch.py), so a rejected draft never stays in it:
  next step, ``all_token_ids`` holds the tokens vLLM kept. A row whose request is still prefilling in
  chunks (``pos + 1 < prefill_len``) is left alone: vLLM discards its sample.

The token ids are read on the device once per step (one synchronisation). ``validate_params`` is the
V1 adapter's (vLLM runs it at admission for processors named with ``--logits-processors``). Importable
without vLLM: the class subclasses MRV2's base only where it imports.
"""

from dataclasses import dataclass

from proxytool.engines.steering import PluginConfig, Request, Steering, SteeringAdapter
from proxytool.errors import ProxyToolError

try:  # MRV2 loads only subclasses of its base; without vLLM (tests) a plain base does
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as _RunnerV2Base
except Exception:  # pragma: no cover - no vLLM, a vLLM before MRV2's interface, or one whose MRV2 cannot import here

    class _RunnerV2Base:  # type: ignore[no-redef]
        pass


__all__ = ["ProxyTuningLogitsProcessorV2"]


@dataclass(frozen=True)
class _Rows:
    """One steered request's rows in this call: logits row indices (local position 0..k), the position
    of row 0 and the draft tokens (the inputs of rows 1..k)."""

    rows: list[int]
    start: int
    first_input: int
    drafts: list[int]


class ProxyTuningLogitsProcessorV2(SteeringAdapter, _RunnerV2Base):
    """Model Runner V2 logits processor: ``base + Σ α (expert − anti-expert)`` on every steered row,
    draft-token rows included (MRV2 keeps custom processors on under speculative decoding)."""

    def __init__(self, vllm_config, req_states, *, config: PluginConfig | None = None):
        config = config if config is not None else PluginConfig.from_env()
        if config.enabled and getattr(vllm_config.model_config, "enable_prompt_embeds", False):
            raise ProxyToolError(
                "proxytool steers token prompts only: start vLLM without --enable-prompt-embeds "
                "(Model Runner V2 does not tell a processor which requests gave embeddings)"
            )
        self.req_states = req_states
        self.steering = Steering(config, vllm_config, req_states.device)
        self.slots: dict[int, Request] = {}  # steered requests by slot (tokens read at their first apply)
        self.seen: set[int] = set()  # slots steered by an apply since the last apply_staged_writes

    def add_request(self, req_idx: int, sampling_params) -> bool:
        """A request takes slot ``req_idx`` (whatever held it is gone); True where it is steered."""
        self.slots.pop(req_idx, None)
        self.seen.discard(req_idx)
        if not self.steering.active:
            return False
        alphas = self.steering.alphas(sampling_params)
        if alphas is None:
            return False
        self.slots[req_idx] = Request([], [], alphas)
        return True

    def apply_staged_writes(self) -> None:
        """A step begins: the pair's state of every request that the last step did not steer goes."""
        if self.steering.active:
            self.pairs.keep([self.slots[s] for s in self.seen if s in self.slots])
        self.seen = set()

    def apply(self, logits, ctx):
        """Steer every row of a steered request in ``logits`` [rows, vocab] in place; padded columns get -inf."""
        if not self.slots:
            return logits
        requests = self._rows(logits, ctx)
        if not requests:
            return logits
        self._read_tokens(requests)
        found = self.pairs.advance(
            [self.slots[s] for s in requests], {self.slots[s]: r.drafts for s, r in requests.items() if r.drafts}
        )
        rows = []
        for slot, layout in requests.items():
            request = self.slots[slot]
            rows += [(row, scores, request.alphas) for row, scores in zip(layout.rows, found[request], strict=True)]
        self.seen.update(requests)
        return self.steering.steer(logits, rows)

    def _rows(self, logits, ctx) -> dict[int, _Rows]:
        """The steered requests of this call and their rows, read from ``ctx`` (one device read)."""
        import torch

        columns = (ctx.expanded_idx_mapping, ctx.expanded_local_pos, ctx.input_ids, ctx.pos)
        if any(c.shape[0] != logits.shape[0] for c in columns):
            raise RuntimeError(f"proxytool: the step's layout does not describe the {logits.shape[0]} logits rows")
        slot_of, local, inputs, positions = torch.stack([c.long().cpu() for c in columns]).tolist()
        wanted = {int(s) for s in ctx.idx_mapping_np} & set(self.slots)
        mine: dict[int, dict[int, int]] = {}
        for row, slot in enumerate(slot_of):
            if slot in wanted:
                mine.setdefault(slot, {})[local[row]] = row
        prefill_len = self.req_states.prefill_len.np
        found = {}
        for slot, by_local in mine.items():
            rows = [by_local.get(j) for j in range(len(by_local))]
            start = positions[rows[0]] if rows[0] is not None else -1
            if None in rows or any(positions[r] != start + j for j, r in enumerate(rows)):
                raise RuntimeError(f"proxytool: slot {slot}'s rows are not one position after another: {by_local}")
            if start + 1 < int(prefill_len[slot]):
                continue  # a prompt chunk: its sample is discarded (the pair starts on the chunk that ends it)
            found[slot] = _Rows(rows, start, inputs[rows[0]], [inputs[r] for r in rows[1:]])
        return found

    def _read_tokens(self, requests: dict[int, _Rows]) -> None:
        """Bring each request's tokens up to its row 0: ``all_token_ids[slot, :start + 1]`` (the tokens
        it has beyond the ones held already, all of them in one device read)."""
        import torch

        spans = []
        for slot, layout in requests.items():
            request = self.slots[slot]
            have = len(request.prompt) + len(request.output)
            if have > layout.start + 1:  # fewer committed tokens than read before: read them all again
                request.prompt, request.output, have = [], [], 0
            spans.append((slot, have, layout.start + 1))
        table = self.req_states.all_token_ids.gpu
        index_rows = [slot for slot, a, b in spans for _ in range(a, b)]
        index_cols = [i for _, a, b in spans for i in range(a, b)]
        index = [torch.tensor(ids, dtype=torch.long, device=table.device) for ids in (index_rows, index_cols)]
        values = table[index[0], index[1]].tolist()
        prefill_len = self.req_states.prefill_len.np
        for slot, a, b in spans:
            request, tokens = self.slots[slot], values[: b - a]
            values = values[b - a :]
            if not request.prompt:  # its first rows: the tokens vLLM prefilled (prompt, and output on resumption)
                fill = int(prefill_len[slot])
                request.prompt, tokens = tokens[:fill], tokens[fill:]
            request.output.extend(tokens)
            if (request.output or request.prompt)[-1] != requests[slot].first_input:
                raise RuntimeError(
                    f"proxytool: slot {slot}'s token at position {b - 1} is not the one vLLM fed at its first row"
                )
