"""Decoding benchmark: base alone (transformers `generate`), proxytool, and a naive proxy decoder.

Each (mode, batch size) runs in a fresh process so peak memory belongs to that mode alone. The naive
decoder has the structure of the paper's reference code: three separate models called one after
another at every step, each with its own KV cache, nothing shared.
"""

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from proxytool.decoding.config import LoadingOptions, ProxySetup

MODES = ("base", "proxy", "naive", "engine-base", "speculative")
# engine-base: proxytool's loop on the base alone; speculative: proxy with --speculative K drafting


@dataclass
class BenchConfig:
    """One benchmark: the proxy setup (one expert pair, loading options) and what to time."""

    setup: ProxySetup
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    modes: list[str] = field(default_factory=lambda: ["base", "proxy", "naive"])
    prompt_tokens: int = 42
    new_tokens: int = 32
    repeats: int = 2
    speculative: int = 4  # draft tokens per round in the speculative mode
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


def run(config: BenchConfig, on_result=lambda r: None) -> list[dict]:
    """Every mode at every batch size, each in its own process; returns one result dict per run."""
    results = []
    for batch in config.batch_sizes:
        for mode in config.modes:
            result = _run_child(config, mode, batch)
            on_result(result)
            results.append(result)
    return results


def _run_child(config: BenchConfig, mode: str, batch: int) -> dict:
    """One run in a fresh process (clean peak memory); it writes its result to a temporary file."""
    with tempfile.TemporaryDirectory(prefix="proxytool-bench-") as tmp:
        out = Path(tmp) / "result.json"
        payload = json.dumps({"config": config.to_json(), "mode": mode, "batch": batch, "out": str(out)})
        proc = subprocess.run(
            [sys.executable, "-m", "proxytool.decoding.speed", payload], capture_output=True, text=True
        )
        if proc.returncode != 0 or not out.exists():
            from proxytool.errors import ProxyToolError

            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ProxyToolError(f"benchmark of {mode} at batch {batch} failed: {last}")
        return json.loads(out.read_text())


def measure(config: BenchConfig, mode: str, batch: int) -> dict:
    """Load what ``mode`` needs, decode ``repeats`` times, return the median timings and peak memory."""
    import torch

    from proxytool.runtime import prepare_runtime

    prepare_runtime(config.setup.loading.threads)
    runners = {
        "base": _BaseAlone,
        "proxy": _Proxy,
        "naive": _Naive,
        "engine-base": lambda c: _Proxy(c, pairs=False),
        "speculative": _Speculative,
    }
    runner = runners[mode](config)
    prompts = _prompts(runner.tokenizer, batch, config.prompt_tokens)
    runner.decode(prompts, 2)  # warm-up
    _reset_peak_memory(runner.device)
    timings = sorted((runner.timed(prompts, config.new_tokens) for _ in range(config.repeats)), key=lambda t: t[1])
    ttft, total = timings[len(timings) // 2]
    decode_time = max(total - ttft, 1e-9)
    extra = runner.extra() if hasattr(runner, "extra") else {}
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

    def decode(self, prompts, n):
        raise NotImplementedError

    def timed(self, prompts, n) -> tuple[float, float]:
        """(time to first token, total time) in seconds."""
        self._sync()
        start = time.perf_counter()
        self.first = None
        self.decode(prompts, n)
        self._sync()
        return self.first - start, time.perf_counter() - start

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

    def __init__(self, config: BenchConfig, pairs: bool = True):
        from proxytool.decoding.setup import load_proxy_models

        self.models = load_proxy_models(config.setup_for(pairs))
        self.tokenizer = self.models.tokenizer
        self.device = self.models.base.source.device

    def decode(self, prompts, n):
        from proxytool.decoding.generate import generate

        for _ in generate(self.models, prompts, max_new_tokens=n, ignore_eos=True):  # fixed-length runs
            self._mark_first()


class _Speculative(_Proxy):
    """proxytool's engine drafting ``config.speculative`` tokens per round with the expert."""

    def __init__(self, config: BenchConfig):
        super().__init__(config)
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
        for _ in rows:
            self._mark_first()

    def extra(self) -> dict:
        """Acceptance of the last timed run: draft tokens kept per round (a round also adds one of its own)."""
        rounds = max(self.stats.get("rounds", 0), 1)
        return {
            "speculative": self.k,
            "draft": self.draft,
            "rounds": self.stats.get("rounds", 0),
            "accepted_per_round": self.stats.get("accepted", 0) / rounds,
        }


class _BaseAlone(_Runner):
    """The floor: the base model alone through transformers' `generate`, greedy, same lengths."""

    def __init__(self, config: BenchConfig):
        proxy = _Proxy(config, pairs=False)
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

        self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            streamer=FirstToken(),
            pad_token_id=self.tokenizer.pad_token_id,
            **self.cache,
        )


class _Naive(_Runner):
    """Three separate models, called one after another per step, each with its own KV cache."""

    def __init__(self, config: BenchConfig):
        from proxytool.decoding.setup import load_proxy_models

        models = load_proxy_models(config.setup_for(share_weights=False, overlap="off"))
        pair = models.pairs[0]
        self.members = [models.base, pair.expert, pair.anti_expert]
        self.models = [m.source.model for m in self.members]
        self.formats = [m.source.groups[m.group].prompt_format for m in self.members]
        self.tokenizer, self.device = models.tokenizer, models.base.source.device

    def decode(self, prompts, n):
        import torch

        from proxytool.decoding.sources import left_pad

        states = []
        for fmt in self.formats:
            ids, mask = left_pad([fmt.encode(p) for p in prompts], self.tokenizer.pad_token_id)
            states.append({"ids": ids.to(self.device), "mask": mask.to(self.device), "cache": None})
        with torch.inference_mode():
            for _ in range(n):
                logits = [self._forward(model, state) for model, state in zip(self.models, states)]
                width = min(t.shape[-1] for t in logits)
                scores = logits[0][:, :width] + (logits[1][:, :width] - logits[2][:, :width])
                token = scores.argmax(-1, keepdim=True)
                self._mark_first()
                for state in states:
                    state["ids"] = token
                    state["mask"] = torch.cat([state["mask"], torch.ones_like(token)], dim=-1)

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
        state["cache"] = out.past_key_values
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


def ratios(results: list[dict]) -> list[dict]:
    """Per batch size: proxy/base and proxy/naive tokens-per-second ratios."""
    rows = []
    for batch in sorted({r["batch"] for r in results}):
        by_mode = {r["mode"]: r for r in results if r["batch"] == batch}
        row = {"batch": batch}
        if "proxy" in by_mode and "base" in by_mode:
            row["proxy_vs_base"] = by_mode["proxy"]["tokens_per_s"] / by_mode["base"]["tokens_per_s"]
        if "proxy" in by_mode and "naive" in by_mode:
            row["proxy_vs_naive"] = by_mode["proxy"]["tokens_per_s"] / by_mode["naive"]["tokens_per_s"]
        for other in ("base", "proxy"):
            if "speculative" in by_mode and other in by_mode:
                row[f"speculative_vs_{other}"] = by_mode["speculative"]["tokens_per_s"] / by_mode[other]["tokens_per_s"]
        rows.append(row)
    return rows


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    result = measure(BenchConfig.from_json(request["config"]), request["mode"], request["batch"])
    Path(request["out"]).write_text(json.dumps(result))
