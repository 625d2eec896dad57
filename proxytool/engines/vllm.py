"""Proxy-tuning inside vLLM: a V1 logits processor that steers a vLLM-served base exactly.

vLLM computes the base's full-vocabulary logits for every request in its batch; this processor runs
the expert pair(s) on the same token ids and replaces each steered row by proxytool's one formula
(:func:`proxytool.decoding.combine.proxy_scores`, base = vLLM's row), so vLLM's own sampler
(temperature, top-p/k, seeds, stop strings, logprobs, n) samples the steered scores.

Configured by environment variables (read in every process vLLM starts; docs/vllm.md):
``PROXYTOOL_VLLM_EXPERTS`` (comma-separated names or paths; unset = the processor does nothing),
``PROXYTOOL_VLLM_ANTI_EXPERTS`` (one per expert, empty = the expert's recorded base),
``PROXYTOOL_VLLM_ALPHAS`` (one, or one per expert; default 1), ``PROXYTOOL_VLLM_DTYPE`` (default
auto) and ``PROXYTOOL_VLLM_DEVICE`` (default: the device vLLM gives the processor). A request sets
its own weights with ``SamplingParams(extra_args={"proxytool_alpha": α or [α, …]})`` (``vllm_xargs``
on the OpenAI routes); α = 0 for every pair leaves that request to the base alone.

The bookkeeping follows vLLM's ``BatchUpdate`` (removed, then added, then moved): each batch slot
holds its request's prompt ids, a live reference to its output ids and its α; the pair's KV state for
all of them is one batch (engines/pair_batch.py: one pair forward per step for every steered row). A
request added again after preemption is prefilled again (recompute). What the two vLLM interfaces share
(configuration, α, the loaded pair, the combine) is engines/steering.py. Importable without vLLM: the
class subclasses vLLM's ``LogitsProcessor`` only where vLLM is installed (tests drive it with a fake
batch); where Model Runner V2 is installed too it also subclasses that runner's base, so the one entry
point loads under either runner (MRV2 refuses V1-only plugins of the group), and MRV2's constructor
call builds the MRV2 adapter (engines/vllm_v2.py).
"""

from proxytool.engines.steering import (
    ENV_ALPHAS,
    ENV_ANTI_EXPERTS,
    ENV_DEVICE,
    ENV_DTYPE,
    ENV_EXPERTS,
    EXTRA_ARG,
    PluginConfig,
    Request,
    Steering,
    SteeringAdapter,
    check_served_tokenizer,
    resolve_pairs,
)
from proxytool.errors import ProxyToolError

try:  # vLLM checks that a processor subclasses its base; without vLLM (tests) a plain base does
    from vllm.v1.sample.logits_processor import LogitsProcessor as _EngineBase
except ImportError:  # pragma: no cover - depends on the environment

    class _EngineBase:  # type: ignore[no-redef]
        pass


try:  # Model Runner V2 loads the group's plugins only if they subclass its base (a vLLM with MRV2)
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as _RunnerV2Base
except Exception:  # pragma: no cover - no vLLM, a vLLM before MRV2's interface, or one whose MRV2 cannot import here

    class _RunnerV2Base:  # type: ignore[no-redef]
        pass


__all__ = [
    "ENV_ALPHAS",
    "ENV_ANTI_EXPERTS",
    "ENV_DEVICE",
    "ENV_DTYPE",
    "ENV_EXPERTS",
    "EXTRA_ARG",
    "PluginConfig",
    "ProxyTuningLogitsProcessor",
    "check_served_tokenizer",
    "resolve_pairs",
]


class ProxyTuningLogitsProcessor(SteeringAdapter, _EngineBase, _RunnerV2Base):
    """vLLM V1 logits processor: ``base + Σ α (expert − anti-expert)`` on every steered row.

    Loads the pair once per worker process (every tensor-parallel rank runs it on the same rows), and
    refuses at start, in one line, an unknown expert, a pair whose tokenizer differs from the served
    model's, a non-finite α or a context longer than the pair takes.
    """

    def __new__(cls, *args, **kwargs):
        if len(args) == 2 and hasattr(args[1], "all_token_ids"):  # Model Runner V2: (vllm_config, req_states)
            from proxytool.engines.vllm_v2 import ProxyTuningLogitsProcessorV2

            return ProxyTuningLogitsProcessorV2(*args, **kwargs)  # not an instance of cls: no __init__ after
        return super().__new__(cls)

    def __init__(self, vllm_config, device, is_pin_memory: bool = False, *, config: PluginConfig | None = None):
        self.steering = Steering(config if config is not None else PluginConfig.from_env(), vllm_config, device)
        self.slots: dict[int, Request] = {}

    @property
    def config(self) -> PluginConfig:
        return self.steering.config

    def is_argmax_invariant(self) -> bool:
        return False  # steering changes which token is the most likely

    def update_state(self, batch_update) -> None:
        """Apply vLLM's batch changes in its order: removed, added, then moved (one-way or swapped)."""
        if batch_update is None or self.models is None:
            return
        for index in batch_update.removed:
            self.slots.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            slot = self._new_slot(params, prompt_ids, output_ids)
            if slot is None:
                self.slots.pop(index, None)  # the base alone (an added request may replace a slot's)
            else:
                self.slots[index] = slot
        for a, b, direction in batch_update.moved:
            first, second = self.slots.pop(a, None), self.slots.pop(b, None)
            if first is not None:
                self.slots[b] = first
            if getattr(direction, "name", str(direction)).upper().endswith("SWAP") and second is not None:
                self.slots[a] = second
        self.pairs.keep(self.slots.values())  # the pair's state of requests that left goes now

    def _new_slot(self, params, prompt_ids, output_ids) -> Request | None:
        alphas = self.steering.alphas(params)
        if alphas is None:
            return None
        if prompt_ids is None:
            raise ProxyToolError("proxytool steers token prompts only (this request gave prompt embeddings)")
        return Request(list(prompt_ids), output_ids, alphas)

    def apply(self, logits):
        """Steer every tracked row of ``logits`` [batch, vocab] in place; padded columns get -inf.

        The pair runs once for all rows (engines/pair_batch.py); rows with the same α are combined at once.
        """
        if not self.slots:
            return logits
        if max(self.slots) >= logits.shape[0]:
            raise RuntimeError(f"proxytool: slot {max(self.slots)} is beyond the {logits.shape[0]} logits rows")
        found = self.pairs.advance(list(self.slots.values()))
        return self.steering.steer(logits, [(i, found[slot][0], slot.alphas) for i, slot in self.slots.items()])
