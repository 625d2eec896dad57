"""The vLLM plugin under a fake batch driver: the bookkeeping calls vLLM makes (adds, removals, one-way
moves, swaps, preemption with recompute, rows ending at different steps), checked token by token
against proxytool's own decoder on the tiny models. No vLLM needed."""

from dataclasses import dataclass, field
from enum import Enum, auto
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import prompt_ids, proxy_setup, reference
from tiny import build_tokenizer, save_model

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete
from proxytool.decoding.setup import load_proxy_models
from proxytool.engines.vllm import (
    ENV_ALPHAS,
    ENV_EXPERTS,
    EXTRA_ARG,
    PluginConfig,
    ProxyTuningLogitsProcessor,
)
from proxytool.errors import ProxyToolError


class Move(Enum):  # vLLM's MoveDirectionality, by name
    UNIDIRECTIONAL = auto()
    SWAP = auto()


@dataclass
class Request:
    prompt: list[int]
    max_tokens: int
    alpha: object = None  # extra_args[EXTRA_ARG], or None for the server's α
    output: list[int] = field(default_factory=list)
    idle: frozenset[int] = frozenset()  # steps whose sampled token vLLM discards (a prompt chunk, a pause)

    @property
    def steered(self) -> bool:
        return not (self.alpha == 0 or (isinstance(self.alpha, list) and not any(self.alpha)))

    @property
    def params(self):
        return SimpleNamespace(extra_args=None if self.alpha is None else {EXTRA_ARG: self.alpha})


class FakeBatch:
    """vLLM's persistent batch as a logits processor sees it: one BatchUpdate per step (removed, added,
    then the one-way moves that close holes, and swaps), the base's logits per slot, greedy choice."""

    def __init__(self, plugin, base, pad_columns: int = 0):
        self.plugin, self.base, self.pad_columns = plugin, base, pad_columns
        self.slots: list[Request | None] = []
        self.removed, self.added, self.moved = [], [], []
        self.t = 0  # the step being run
        self.steered: list[int] = []  # per step: the steered requests in the batch

    def add(self, request: Request) -> None:
        slot = self.slots.index(None) if None in self.slots else len(self.slots)
        self.slots[slot : slot + 1] = [request]
        self.added.append((slot, request.params, list(request.prompt), request.output))

    def remove(self, request: Request) -> None:
        slot = self.slots.index(request)
        self.slots[slot] = None
        self.removed.append(slot)

    def rewind(self, request: Request) -> None:
        """Take the request's last token back (it is sampled again)."""
        request.output.pop()

    def swap(self, a: int, b: int) -> None:
        self.slots[a], self.slots[b] = self.slots[b], self.slots[a]
        self.moved.append((a, b, Move.SWAP))

    def _condense(self) -> None:
        """Move the last requests into the holes, one way (as vLLM condenses after removals)."""
        while None in self.slots:
            hole = self.slots.index(None)
            last = max((i for i, r in enumerate(self.slots) if r is not None), default=-1)
            if last < hole:
                del self.slots[hole:]
                break
            self.slots[hole], self.slots[last] = self.slots[last], None
            self.moved.append((last, hole, Move.UNIDIRECTIONAL))

    def step(self) -> None:
        self._condense()
        changed = self.removed or self.added or self.moved
        update = SimpleNamespace(batch_size=len(self.slots), removed=self.removed, added=self.added, moved=self.moved)
        self.plugin.update_state(update if changed else None)
        self.removed, self.added, self.moved = [], [], []
        if not self.slots:
            self.t += 1
            return
        self.steered.append(sum(r.steered for r in self.slots))
        with torch.no_grad():
            rows = [self.base(torch.tensor([r.prompt + r.output])).logits[0, -1].float() for r in self.slots]
        logits = torch.stack(rows)
        if self.pad_columns:  # a padded vocabulary whose padding would win unless trimmed
            logits = torch.cat([logits, torch.full((len(rows), self.pad_columns), 1e4)], dim=-1)
        logits = self.plugin.apply(logits)
        for slot, request in enumerate(self.slots):
            if self.t not in request.idle:
                request.output.append(int(logits[slot].argmax()))
        self.t += 1
        for request in list(self.slots):
            if len(request.output) == request.max_tokens:
                self.remove(request)

    def run(self, script: dict[int, list]) -> None:
        """``script[step]``: calls made before that step (adds, removals, swaps); runs until all end."""
        step = 0
        while self.slots or any(s >= step for s in script):
            for call in script.get(step, []):
                call(self)
            self.step()
            step += 1


@dataclass(frozen=True)
class Call:
    step: int
    source: int  # index among the plugin's pair sources
    kind: str  # prefill or extend
    rows: int
    tokens: int  # tokens per row


def count_forwards(plugin, driver) -> list[Call]:
    """Record every prefill and extend of the plugin's pair sources (one forward each)."""
    calls = []

    def wrap(n, kind, inner):
        def counted(*args, **kwargs):
            if kind == "prefill":
                rows, tokens = len(args[0]), 0
            else:
                rows, tokens = args[1].shape
            calls.append(Call(driver.t, n, kind, rows, tokens))
            return inner(*args, **kwargs)

        return counted

    for n, source in enumerate(plugin.models.sources):
        for kind in ("prefill", "extend"):
            setattr(source, kind, wrap(n, kind, getattr(source, kind)))
    return calls


def extends_by_step(calls: list[Call], source: int) -> dict[int, list[Call]]:
    steps = {}
    for call in calls:
        if call.kind == "extend" and call.source == source:
            steps.setdefault(call.step, []).append(call)
    return steps


def vllm_config(base, max_model_len=256):
    return SimpleNamespace(
        model_config=SimpleNamespace(model=str(base), tokenizer=str(base), max_model_len=max_model_len)
    )


def plugin_for(base, experts, antis, alphas, **kwargs):
    config = PluginConfig(tuple(map(str, experts)), tuple(map(str, antis)), tuple(alphas), "float32", "cpu")
    return ProxyTuningLogitsProcessor(vllm_config(base, **kwargs), torch.device("cpu"), False, config=config)


@pytest.mark.parametrize("pairs", ["one pair", "two pairs"])
def test_every_row_of_a_shuffled_batch_equals_proxytool_decode(tiny_models, base_model, pairs):
    t = tiny_models
    experts, antis = [t["expert"]], [t["anti"]]
    if pairs == "two pairs":
        experts, antis = [t["expert"], t["gpt2"]], [t["anti"], t["anti"]]
    alphas = [1.0] * len(experts)
    plugin = plugin_for(t["base"], experts, antis, alphas)
    prompts = prompt_ids(t, 6, seed=4)
    requests = [
        Request(prompts[0], 9),
        Request(prompts[1], 5, alpha=0.5),  # ends early: a one-way move fills its slot
        Request(prompts[2], 12, alpha=-0.7),
        Request(prompts[3], 7, alpha=2.0 if pairs == "one pair" else [2.0, -1.0]),
        Request(prompts[4], 10, alpha=1.5),  # preempted, then re-added with its tokens (recompute)
        Request(prompts[5], 4),
    ]
    a, b, c, d, e, f = requests
    script = {
        0: [lambda x: x.add(a), lambda x: x.add(b), lambda x: x.add(c)],
        2: [lambda x: x.add(d), lambda x: x.add(e)],
        3: [lambda x: x.swap(0, 2)],
        4: [lambda x: x.remove(e)],  # preemption
        6: [lambda x: x.add(f), lambda x: x.swap(1, 2)],
        7: [lambda x: x.add(e)],  # recompute: prompt and the tokens so far
    }
    driver = FakeBatch(plugin, base_model, pad_columns=16)
    calls = count_forwards(plugin, driver)
    driver.run(script)
    assert not plugin.slots  # every finished request left the plugin's slots
    assert not plugin.pairs.rows and plugin.pairs.batch is None and not plugin.pairs.tracks
    for n in range(len(plugin.models.sources)):  # one forward per step covers every row not just prefilled
        prefills = [c for c in calls if c.source == n and c.kind == "prefill"]
        # the requests added in one step are prefilled together: a b c, then d e, then f, then e recomputed
        assert [(c.step, c.rows) for c in prefills] == [(0, 3), (2, 2), (6, 1), (7, 1)]
        for step, extends in extends_by_step(calls, n).items():
            (extend,) = extends
            fresh = sum(c.rows for c in prefills if c.step == step)
            assert (extend.rows, extend.tokens) == (driver.steered[step] - fresh, 1)
    for i, request in enumerate(requests):
        assert request.output == reference(t, experts, antis, request, alphas), f"request {i}"
    unsteered = [reference(t, experts, antis, Request(r.prompt, r.max_tokens, alpha=0.0), alphas) for r in requests]
    assert sum(r.output != u for r, u in zip(requests, unsteered)) >= 4  # the pair does change the tokens


def test_the_pair_runs_once_per_step_for_every_row(tiny_models, base_model):
    t = tiny_models
    plugin = plugin_for(t["base"], [t["expert"]], [t["anti"]], [1.0])
    alphas = [None, 0.5, -0.7, 0.5, 2.0]  # two rows share α: one combine for both
    requests = [Request(p, 6, alpha=a) for p, a in zip(prompt_ids(t, 5, seed=11), alphas)]
    driver = FakeBatch(plugin, base_model)
    calls = count_forwards(plugin, driver)
    driver.run({0: [lambda x, r=r: x.add(r) for r in requests]})
    for n in range(len(plugin.models.sources)):
        assert [(c.step, c.kind, c.rows) for c in calls if c.source == n] == [(0, "prefill", 5)] + [
            (step, "extend", 5) for step in range(1, 6)
        ]
    for request in requests:
        assert request.output == reference(t, [t["expert"]], [t["anti"]], request, [1.0])


def test_mixed_alphas_pauses_and_rewinds_stay_exact_in_one_batch(tiny_models, base_model):
    """α per request (0 for every pair: skipped; 0 for one pair), a request whose first tokens are
    discarded (a chunked prompt), one paused mid-way, one whose last token is taken back, preemption."""
    t = tiny_models
    experts, antis, alphas = [t["expert"], t["gpt2"]], [t["anti"], t["anti"]], [1.0, 1.0]
    plugin = plugin_for(t["base"], experts, antis, alphas)
    p = prompt_ids(t, 6, seed=13)
    a, b, c = Request(p[0], 10), Request(p[1], 8, alpha=0), Request(p[2], 9, alpha=[2.0, 0])
    d = Request(p[3], 7, alpha=0.5, idle=frozenset({2, 3}))
    e = Request(p[4], 9, alpha=[-0.5, 1.5], idle=frozenset({5}))
    f = Request(p[5], 6, alpha=1.0)
    script = {
        0: [lambda x: x.add(a), lambda x: x.add(b), lambda x: x.add(c)],
        2: [lambda x: x.add(d), lambda x: x.add(e)],
        3: [lambda x: x.swap(0, 2)],
        4: [lambda x: x.add(f)],
        5: [lambda x: x.rewind(a)],
        6: [lambda x: x.remove(f)],  # preemption
        8: [lambda x: x.add(f)],  # recompute
    }
    driver = FakeBatch(plugin, base_model)
    calls = count_forwards(plugin, driver)
    driver.run(script)
    for n in range(len(plugin.models.sources)):
        prefills = [c for c in calls if c.source == n and c.kind == "prefill"]
        # a c together, d e together; d again (its first token discarded: out of step), f; a after its
        # rewind, e after its pause, f recomputed (never b: α = 0)
        assert [(c.step, c.rows) for c in prefills] == [(0, 2), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1), (8, 1)]
        steps = extends_by_step(calls, n)
        assert all(len(extends) == 1 and extends[0].tokens == 1 for extends in steps.values())
        assert all(extends[0].rows <= driver.steered[step] for step, extends in steps.items())
        assert max(extends[0].rows for extends in steps.values()) >= 4
    for i, request in enumerate((a, b, c, d, e, f)):
        assert request.output == reference(t, experts, antis, request, alphas), f"request {i}"


@pytest.mark.parametrize("why", ["not joinable", "join refuses"])
def test_sources_that_cannot_merge_end_with_each_request_alone(tiny_models, base_model, monkeypatch, why):
    from proxytool.decoding.sources import ModelSource

    if why == "not joinable":  # as a static KV cache says
        monkeypatch.setattr(ModelSource, "joinable", property(lambda self: False))
    else:  # a cache that only join finds it cannot rearrange (sliding-window layers)

        def refuse(self, state, other):
            raise ProxyToolError("this model's KV cache (DynamicSlidingWindowLayer) cannot take or lose rows")

        monkeypatch.setattr(ModelSource, "join", refuse)
        monkeypatch.setattr(ModelSource, "drop", refuse)
    t = tiny_models
    plugin = plugin_for(t["base"], [t["expert"]], [t["anti"]], [1.0])
    assert plugin.pairs.joinable == (why == "join refuses")
    p = prompt_ids(t, 3, seed=17)
    requests = [Request(p[0], 6), Request(p[1], 4, alpha=-0.5), Request(p[2], 5, alpha=2.0)]
    driver = FakeBatch(plugin, base_model)
    calls = count_forwards(plugin, driver)
    driver.run({0: [lambda x: x.add(requests[0]), lambda x: x.add(requests[1])], 2: [lambda x: x.add(requests[2])]})
    assert plugin.pairs.batch is None and not plugin.pairs.joinable
    if why == "not joinable":
        assert all(c.rows == 1 for c in calls)
        assert max(len(extends) for extends in extends_by_step(calls, 0).values()) == 3
    else:  # the first two, prefilled together, share a batch until a row must leave it (drop refuses)
        assert [(c.step, c.kind, c.rows) for c in calls if c.source == 0 and c.step <= 4] == [
            (0, "prefill", 2), (1, "extend", 2), (2, "extend", 2), (2, "prefill", 1),  # join refused
            (3, "prefill", 1), (3, "extend", 2), (4, "prefill", 1), (4, "extend", 1),  # each alone from now
        ]  # fmt: skip
        assert all(c.rows == 1 for c in calls if c.step > 3)
    for request in requests:
        assert request.output == reference(t, [t["expert"]], [t["anti"]], request, [1.0])


def test_alpha_zero_and_expert_equal_to_anti_expert_give_the_base_alone(tiny_models, base_model):
    t = tiny_models
    prompts = prompt_ids(t, 3, seed=8)
    base_alone = load_proxy_models(proxy_setup(t["base"]))

    def solo(request):
        prompts = [TokenPrompt(tuple(request.prompt))]
        return complete(base_alone, prompts, max_new_tokens=request.max_tokens, ignore_eos=True)[0].token_ids

    same = plugin_for(t["base"], [t["anti"]], [t["anti"]], [3.0])  # zero offset, steered rows
    off = plugin_for(t["base"], [t["expert"]], [t["anti"]], [1.0])
    for plugin, alpha in ((same, None), (off, 0.0), (off, [0])):
        requests = [Request(p, 6 + i, alpha=alpha) for i, p in enumerate(prompts)]
        driver = FakeBatch(plugin, base_model)
        driver.run({0: [lambda x, r=r: x.add(r) for r in requests[:2]], 2: [lambda x, r=requests[2]: x.add(r)]})
        assert [r.output for r in requests] == [solo(r) for r in requests]
    assert same.models is not None and off.models is not None
    assert not off.slots  # α = 0 rows are never tracked: the pair does not run for them
    steered, base_only = Request([5, 6], 3), Request([7], 3, alpha=0)
    off.update_state(SimpleNamespace(batch_size=1, removed=[], added=[(0, steered.params, [5, 6], [])], moved=[]))
    off.update_state(SimpleNamespace(batch_size=1, removed=[], added=[(0, base_only.params, [7], [])], moved=[]))
    assert not off.slots  # an added request replaces the slot's previous one


def test_an_unconfigured_plugin_does_nothing(tiny_models, monkeypatch):
    monkeypatch.delenv(ENV_EXPERTS, raising=False)
    plugin = ProxyTuningLogitsProcessor(vllm_config(tiny_models["base"]), torch.device("cpu"), False)
    plugin.update_state(
        SimpleNamespace(batch_size=1, removed=[], added=[(0, Request([1], 2).params, [1], [])], moved=[])
    )
    logits = torch.randn(1, 320)
    assert torch.equal(plugin.apply(logits.clone()), logits)
    assert plugin.is_argmax_invariant() is False


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (1000.5, "between"),
        ("1", "number"),
        (True, "number"),
        ([1.0, 2.0], "2 values for 1"),
        (None, "number"),
    ],
)
def test_bad_request_alphas_are_refused(tiny_models, monkeypatch, value, message):
    monkeypatch.setenv(ENV_EXPERTS, str(tiny_models["expert"]))
    with pytest.raises(ValueError, match=message):
        ProxyTuningLogitsProcessor.validate_params(SimpleNamespace(extra_args={EXTRA_ARG: value}))


def test_good_request_alphas_pass_and_no_config_refuses_them(tiny_models, monkeypatch):
    monkeypatch.setenv(ENV_EXPERTS, f"{tiny_models['expert']},{tiny_models['gpt2']}")
    monkeypatch.setenv("PROXYTOOL_VLLM_ANTI_EXPERTS", f"{tiny_models['anti']},{tiny_models['anti']}")
    for good in (0, 2.5, -1000, [1, 0.5]):
        ProxyTuningLogitsProcessor.validate_params(SimpleNamespace(extra_args={EXTRA_ARG: good}))
    ProxyTuningLogitsProcessor.validate_params(SimpleNamespace(extra_args=None))
    monkeypatch.delenv(ENV_EXPERTS)
    monkeypatch.delenv("PROXYTOOL_VLLM_ANTI_EXPERTS")
    ProxyTuningLogitsProcessor.validate_params(SimpleNamespace(extra_args={"other": 1}))
    with pytest.raises(ValueError, match="not configured"):
        ProxyTuningLogitsProcessor.validate_params(SimpleNamespace(extra_args={EXTRA_ARG: 1.0}))


@pytest.mark.parametrize(
    "env, message",
    [
        ({ENV_EXPERTS: "no-such-model"}, "no-such-model"),
        ({ENV_EXPERTS: "EXPERT", ENV_ALPHAS: "nan"}, "finite"),
        ({ENV_EXPERTS: "EXPERT", ENV_ALPHAS: "x"}, "not a number"),
        ({ENV_EXPERTS: "EXPERT", ENV_ALPHAS: "1,2,3"}, "3 --alpha values for 1"),
        ({ENV_ALPHAS: "1"}, "without"),
        ({ENV_EXPERTS: "EXPERT,"}, "empty name"),
    ],
)
def test_bad_configuration_is_refused_at_start_in_one_line(tiny_models, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("EXPERT", str(tiny_models["expert"])))
    with pytest.raises(ProxyToolError, match=message) as err:
        ProxyTuningLogitsProcessor(vllm_config(tiny_models["base"]), torch.device("cpu"), False)
    assert "\n" not in str(err.value)


def test_a_pair_in_another_tokenizer_or_a_longer_context_is_refused(tiny_models, tmp_path):
    from tiny import OTHER_CORPUS

    other = save_model(tmp_path / "other", tokenizer=build_tokenizer(corpus=OTHER_CORPUS))
    with pytest.raises(ProxyToolError, match="tokenizers of the served model .* differ"):
        plugin_for(tiny_models["base"], [other], [other], [1.0])
    with pytest.raises(ProxyToolError, match="--max-model-len 256"):
        plugin_for(tiny_models["base"], [tiny_models["expert"]], [tiny_models["anti"]], [1.0], max_model_len=4096)


def test_a_second_instance_on_one_engine_stays_off(tiny_models):
    """vLLM builds the class twice when the entry point and --logits-processors both name it."""
    config = vllm_config(tiny_models["base"])
    plugin = PluginConfig((str(tiny_models["expert"]),), (str(tiny_models["anti"]),), (1.0,), "float32", "cpu")
    first = ProxyTuningLogitsProcessor(config, torch.device("cpu"), False, config=plugin)
    second = ProxyTuningLogitsProcessor(config, torch.device("cpu"), False, config=plugin)
    assert first.models is not None and second.models is None


def test_placeholder_output_ids_are_refused_not_decoded(tiny_models):
    plugin = plugin_for(tiny_models["base"], [tiny_models["expert"]], [tiny_models["anti"]], [1.0])
    output = []
    plugin.update_state(SimpleNamespace(batch_size=1, removed=[], added=[(0, None, [5, 6], output)], moved=[]))
    plugin.apply(torch.zeros(1, 320))
    output.append(-1)  # async scheduling without the repair of output ids
    with pytest.raises(RuntimeError, match="no-async-scheduling"):
        plugin.apply(torch.zeros(1, 320))


def test_the_module_is_light_and_registered_for_vllm():
    """Importing it loads no torch (vLLM imports every entry point of the group at start)."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    code = "import sys, proxytool.engines.vllm; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    entry = pyproject["project"]["entry-points"]["vllm.logits_processors"]["proxytool"]
    assert entry == "proxytool.engines.vllm:ProxyTuningLogitsProcessor"
