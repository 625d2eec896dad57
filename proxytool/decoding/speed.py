"""Decoding benchmark: base alone (transformers `generate`), proxytool, and the paper's reference loop.

Each (mode, batch size) runs in a fresh process so peak memory belongs to that mode alone. The
reference mode is the paper's decoding loop (three separate models, each with its own transformers
cache, one Python loop); every mode records its tokens, and :func:`agreement` checks in the same run
that proxytool's tokens equal the reference's.

The other modes load their models with the function :func:`run`'s ``loader`` names (``module:function``,
imported in each child process): the engine's ``load_proxy_models`` by default; ``proxytool bench``
names the public API's (``proxytool.api.tuned:load_models``, through ``ProxyTuned.from_setup``).
"""

import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from proxytool.decoding.config import LoadingOptions, ProxySetup
from proxytool.decoding.overlap import TRIALS
from proxytool.decoding.speculative import AUTO_DRAFTS
from proxytool.decoding.way_timings import WayTimings

MODES = ("base", "proxy", "reference", "engine-base", "speculative")
ENGINE_LOADER = "proxytool.decoding.setup:load_proxy_models"
# --overlap auto and --speculative auto choose during the warm-up, so the timed runs are steady-state
WARM_UP_TOKENS = max(2 + 2 * TRIALS, 2 + 2 * WayTimings.TRIALS * (1 + AUTO_DRAFTS))
# engine-base: proxytool's loop on the base alone; speculative: proxy with --speculative K drafting


@dataclass
class BenchConfig:
    """One benchmark: the proxy setup (one expert pair, loading options) and what to time."""

    setup: ProxySetup
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    modes: list[str] = field(default_factory=lambda: ["base", "proxy", "reference"])
    prompt_tokens: int = 42
    new_tokens: int = 32
    repeats: int = 2
    rounds: int = 1  # each mode's runs per batch size, in alternating order: see run()
    speculative: int = 4  # draft tokens per round in the speculative mode
    proxy_speculative: int | str = 0  # how the proxy mode speculates: 0 (decode's default) or auto
    draft: str = "expert"

    def setup_for(self, pairs: bool = True, **loading) -> ProxySetup:
        """The setup of one mode: ``pairs=False`` is the base alone; ``loading`` overrides options."""
        experts = self.setup.experts if pairs else ()
        return replace(
            self.setup,
            experts=experts,
            anti_experts=self.setup.anti_experts if pairs else (),
            alphas=self.setup.alphas if pairs else (),
            loading=replace(self.setup.loading, **loading),
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "BenchConfig":
        setup = dict(data["setup"])
        setup["loading"] = LoadingOptions(**setup["loading"])
        return cls(**{**data, "setup": ProxySetup(**setup)})


def run(config: BenchConfig, on_result=lambda r: None, loader: str = ENGINE_LOADER) -> list[dict]:
    """Every mode at every batch size, each in its own process; returns one result dict per mode and batch.

    With ``rounds`` > 1 the modes run that many times per batch size in alternating order (A B, B A, A B,
    …) and each mode's runs are merged (:func:`merged_rounds`): a machine whose speed drifts over the
    minutes a run takes slows every mode alike, so the ratios between modes hold.

    ``loader``: ``module:function`` of the function that loads a setup's models (every mode but
    ``reference``, which is the paper's loop over plain transformers models)."""
    results = []
    for batch in config.batch_sizes:
        runs: dict[str, list[dict]] = {mode: [] for mode in config.modes}
        for round_ in range(config.rounds):
            for mode in config.modes if round_ % 2 == 0 else config.modes[::-1]:
                runs[mode].append(_run_child(config, mode, batch, loader))
                if config.rounds == 1:
                    on_result(runs[mode][-1])
        merged = [runs[mode][0] if config.rounds == 1 else merged_rounds(runs[mode]) for mode in config.modes]
        if config.rounds > 1:
            for result in merged:
                on_result(result)
        results += merged
    return results


def merged_rounds(runs: list[dict]) -> dict:
    """One mode's runs in several rounds as one result: the mean times (the speed from the mean decode
    time), the highest peak memory, the first run's tokens, and each round's ms per step."""
    first = runs[0]
    steps = first["new_tokens"] - 1
    decode = statistics.mean(r["total_s"] - r["ttft_s"] for r in runs)
    return first | {
        "ttft_s": statistics.mean(r["ttft_s"] for r in runs),
        "total_s": statistics.mean(r["total_s"] for r in runs),
        "tokens_per_s": first["batch"] * steps / decode,
        "ms_per_step": 1000 * decode / steps,
        "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
        "rounds_ms_per_step": [r["ms_per_step"] for r in runs],
        "rounds_same_tokens": all(r["tokens"] == first["tokens"] for r in runs),
    }


def _run_child(config: BenchConfig, mode: str, batch: int, loader: str = ENGINE_LOADER) -> dict:
    """One run in a fresh process (clean peak memory); it writes its result to a temporary file."""
    with tempfile.TemporaryDirectory(prefix="proxytool-bench-") as tmp:
        out = Path(tmp) / "result.json"
        request = {"config": config.to_json(), "mode": mode, "batch": batch, "out": str(out), "loader": loader}
        payload = json.dumps(request)
        proc = subprocess.run(
            [sys.executable, "-m", "proxytool.decoding.speed", payload], capture_output=True, text=True
        )
        if proc.returncode != 0 or not out.exists():
            from proxytool.errors import ProxyToolError

            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ProxyToolError(f"benchmark of {mode} at batch {batch} failed: {last}")
        return json.loads(out.read_text())


def measure(config: BenchConfig, mode: str, batch: int, load=None) -> dict:
    """Load what ``mode`` needs, decode ``repeats`` times, return the median timings and peak memory.

    ``load``: loads a setup's models for every mode but ``reference`` (default: the engine's)."""
    import torch

    from proxytool.runtime import prepare_runtime

    prepare_runtime(config.setup.loading.threads)
    load = load or _imported(ENGINE_LOADER)
    config = replace(config, setup=config.setup_for(expected_batch=batch))  # the layout auto chooses for it
    runners = {
        "base": lambda c: _BaseAlone(c, load),
        "proxy": lambda c: _Proxy(c, load=load),
        "reference": _Reference,
        "engine-base": lambda c: _Proxy(c, pairs=False, load=load),
        "speculative": lambda c: _Speculative(c, load),
    }
    runner = runners[mode](config)
    prompts = _prompts(runner.tokenizer, batch, config.prompt_tokens)
    runner.decode(prompts, WARM_UP_TOKENS)
    _reset_peak_memory(runner.device)
    timings = sorted((runner.timed(prompts, config.new_tokens) for _ in range(config.repeats)), key=lambda t: t[1])
    ttft, total, tokens = timings[len(timings) // 2]
    decode_time = max(total - ttft, 1e-9)
    extra = runner.extra()
    return extra | {
        "mode": mode,
        "batch": batch,
        "new_tokens": config.new_tokens,
        "prompt_tokens": config.prompt_tokens,
        "ttft_s": ttft,
        "total_s": total,
        "tokens_per_s": batch * (config.new_tokens - 1) / decode_time,
        "ms_per_step": 1000 * decode_time / (config.new_tokens - 1),
        "peak_rss_gb": _peak_rss_gb(),
        "cuda_max_allocated_gb": _cuda_peak_gb(runner.device),
        "device": str(runner.device),
        "threads": torch.get_num_threads(),
        "tokens": tokens,
    }


def _prompts(tokenizer, batch: int, length: int) -> list[str]:
    """Distinct prompts of about ``length`` tokens each."""
    words = "the poll of likely voters shows a narrow lead in the state with a margin of error".split()
    prompts = []
    for row in range(batch):
        text, i = "", row
        while len(tokenizer(text)["input_ids"]) < length:
            text += words[i % len(words)] + " "
            i += 3
        prompts.append(text.strip())
    return prompts


class _Runner:
    device = None
    tokenizer = None
    first = None

    def decode(self, prompts, n) -> list[list[int]]:
        """``n`` new tokens per prompt, greedy; returns them."""
        raise NotImplementedError

    def extra(self) -> dict:
        """Mode-specific facts for the result."""
        return {}

    def timed(self, prompts, n) -> tuple[float, float, list[list[int]]]:
        """(time to first token, total time) in seconds, and the tokens of each row."""
        self._sync()
        start = time.perf_counter()
        self.first = None
        tokens = self.decode(prompts, n)
        self._sync()
        return self.first - start, time.perf_counter() - start, tokens

    def _mark_first(self):
        if self.first is None:
            self._sync()
            self.first = time.perf_counter()

    def _sync(self):
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()


class _Proxy(_Runner):
    """proxytool's engine (shared LoRA pair, per-model KV caches, batched rows)."""

    def __init__(self, config: BenchConfig, pairs: bool = True, load=None, **loading):
        self.models = (load or _imported(ENGINE_LOADER))(config.setup_for(pairs, **loading))
        self.tokenizer = self.models.tokenizer
        self.device = self.models.base.source.device
        self.speculative = config.proxy_speculative

    def decode(self, prompts, n):
        from proxytool.decoding.generate import generate

        rows = generate(self.models, prompts, max_new_tokens=n, ignore_eos=True, speculative=self.speculative)
        return self._drain(rows)  # fixed length

    def extra(self) -> dict:
        """How the sources ran (always in lanes, one after another, or per call shape as measured), and
        each way's seconds per token under ``--speculative auto``, by batch size."""
        return self._how_ran() | {
            "proxy_speculative": self.speculative,
            "speculation": self.models.speculation.summary(),
        }

    def _how_ran(self) -> dict:
        """Each source's weight layout and what --overlap chose."""
        from proxytool.models.packed import layout_of

        lanes = self.models.lanes
        weights = ", ".join(layout_of(s.model) for s in self.models.sources if getattr(s, "model", None) is not None)
        return {"weights": weights} | (
            {"lanes": "off"} if lanes is None else {"lanes": lanes.choices() if lanes.measure else "on"}
        )

    def _drain(self, rows) -> list[list[int]]:
        """Run :func:`generate` to its end, marking the first token; returns every row's tokens."""
        last = []
        for last in rows:  # noqa: B007 (the last yield holds the result)
            self._mark_first()
        return [row.token_ids for row in last]


class _Speculative(_Proxy):
    """proxytool's engine drafting ``config.speculative`` tokens per round with the expert."""

    def __init__(self, config: BenchConfig, load=None):
        super().__init__(config, load=load)
        self.k, self.draft, self.stats = config.speculative, config.draft, {}

    def decode(self, prompts, n):
        from proxytool.decoding.generate import generate

        self.stats = {}
        rows = generate(
            self.models,
            prompts,
            speculative=self.k,
            max_new_tokens=n,
            ignore_eos=True,
            draft=self.draft,
            stats=self.stats,
        )
        return self._drain(rows)

    def extra(self) -> dict:
        """Acceptance of the last timed run: draft tokens kept per round (a round also adds one of its own)."""
        rounds = max(self.stats.get("rounds", 0), 1)
        return self._how_ran() | {
            "speculative": self.k,
            "draft": self.draft,
            "rounds": self.stats.get("rounds", 0),
            "accepted_per_round": self.stats.get("accepted", 0) / rounds,
        }


class _BaseAlone(_Runner):
    """The floor: the base model alone through transformers' `generate`, greedy, same lengths."""

    def __init__(self, config: BenchConfig, load=None):
        proxy = _Proxy(config, pairs=False, load=load, pack_weights="off")  # as a user would run transformers
        self.model, self.tokenizer, self.device = proxy.models.base.source.model, proxy.tokenizer, proxy.device
        self.prompt_format = proxy.models.base.source.groups[0].prompt_format
        # with --kv-cache static the floor uses transformers' static cache too (compiled on CUDA by generate)
        self.cache = {"cache_implementation": "static"} if config.setup.loading.kv_cache == "static" else {}

    def decode(self, prompts, n):
        from proxytool.decoding.sources import left_pad

        ids, mask = left_pad([self.prompt_format.encode(p) for p in prompts], self.tokenizer.pad_token_id)
        runner = self

        class FirstToken:
            calls = 0

            def put(self, value):
                self.calls += 1
                if self.calls == 2:  # the first call carries the prompt
                    runner._mark_first()

            def end(self):
                pass

        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            streamer=FirstToken(),
            pad_token_id=self.tokenizer.pad_token_id,
            **self.cache,
        )
        return out[:, ids.shape[1] :].tolist()


class _Reference(_Runner):
    """The paper's decoding loop, written out plainly: three separately loaded models (an adapter
    expert merged into its own copy), each stepping with its own transformers cache object, one
    Python loop, ``base + α (expert − anti)`` over the tokenizer's vocabulary, argmax; torch's own kernels
    (no packed weights), as the paper's code runs."""

    def __init__(self, config: BenchConfig):
        from proxytool.decoding.setup import load_proxy_models

        models = load_proxy_models(config.setup_for(share_weights=False, overlap="off", pack_weights="off"))
        pair = models.pairs[0]
        members = [models.base, pair.expert, pair.anti_expert]
        self.models = [m.source.model for m in members]
        self.formats = [m.source.groups[m.group].prompt_format for m in members]
        self.alpha = models.alphas[0]
        self.tokenizer, self.device = models.tokenizer, models.base.source.device

    def decode(self, prompts, n):
        import torch
        from transformers import DynamicCache

        from proxytool.decoding.sources import left_pad

        states = []
        for model, fmt in zip(self.models, self.formats):
            ids, mask = left_pad([fmt.encode(p) for p in prompts], self.tokenizer.pad_token_id)
            cache = DynamicCache(config=model.config)
            states.append({"ids": ids.to(self.device), "mask": mask.to(self.device), "cache": cache})
        vocab = len(self.tokenizer)
        chosen = []
        with torch.inference_mode():
            for _ in range(n):
                base, expert, anti = (self._forward(m, s)[:, :vocab] for m, s in zip(self.models, states))
                token = (base + self.alpha * (expert - anti)).argmax(-1, keepdim=True)
                chosen.append(token)
                self._mark_first()
                for state in states:
                    state["ids"] = token
                    state["mask"] = torch.cat([state["mask"], torch.ones_like(token)], dim=-1)
        return torch.cat(chosen, dim=1).tolist()

    @staticmethod
    def _forward(model, state):
        mask = state["mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -state["ids"].shape[1] :]
        out = model(
            input_ids=state["ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=state["cache"],
            use_cache=True,
        )
        return out.logits[:, -1, :].float()


def _reset_peak_memory(device) -> None:
    import torch

    try:  # Linux: writing 5 resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_rss_gb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _cuda_peak_gb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if str(device).startswith("cuda") else None


COMPARED = (  # (mode, against): the speed ratios and token checks reported where both ran
    ("proxy", "base"),
    ("proxy", "reference"),
    ("speculative", "base"),
    ("speculative", "reference"),
    ("speculative", "proxy"),
    ("engine-base", "base"),
)


def ratios(results: list[dict]) -> list[dict]:
    """Per batch size: tokens/s of each mode against the others in :data:`COMPARED`, e.g. ``proxy_vs_reference``."""
    rows = []
    for batch, by_mode in _by_batch(results):
        row = {"batch": batch}
        for mode, other in COMPARED:
            if mode in by_mode and other in by_mode:
                row[f"{mode}_vs_{other}"] = by_mode[mode]["tokens_per_s"] / by_mode[other]["tokens_per_s"]
        rows.append(row)
    return rows


SAME_TOKENS = (("proxy", "reference"), ("speculative", "reference"), ("speculative", "proxy"))
"""Modes that compute the same greedy tokens (the base alone differs, and `generate`'s fixed length
suppresses EOS where the others emit it and go on)."""


def agreement(results: list[dict]) -> list[dict]:
    """Per batch size: how many rows of each mode's tokens equal the other's, for the pairs in
    :data:`SAME_TOKENS`, e.g. ``{"batch": 8, "proxy_vs_reference": [8, 8]}`` (equal rows, rows)."""
    rows = []
    for batch, by_mode in _by_batch(results):
        row = {"batch": batch}
        for mode, other in SAME_TOKENS:
            if mode in by_mode and other in by_mode:
                mine, theirs = by_mode[mode]["tokens"], by_mode[other]["tokens"]
                row[f"{mode}_vs_{other}"] = [sum(a == b for a, b in zip(mine, theirs)), len(theirs)]
        rows.append(row)
    return rows


def _by_batch(results: list[dict]):
    for batch in sorted({r["batch"] for r in results}):
        yield batch, {r["mode"]: r for r in results if r["batch"] == batch}


def machine() -> dict:
    """What the figures were measured on: cores, memory, torch, and the GPU if any."""
    import os

    import torch

    from proxytool.runtime import cpu_name

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory, 1),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "gpu": gpu,
    }


def _imported(name: str):
    """The function a ``module:function`` name names (a loader, imported in the child process)."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def child(payload: str) -> None:
    """What each run's process does: measure one (mode, batch) and write the result file."""
    request = json.loads(payload)
    load = _imported(request.get("loader", ENGINE_LOADER))
    result = measure(BenchConfig.from_json(request["config"]), request["mode"], request["batch"], load)
    Path(request["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    child(sys.argv[1])
