"""The vLLM plugin under a fake batch driver: the bookkeeping calls vLLM makes (adds, removals, one-way
moves, swaps, preemption with recompute, rows ending at different steps), checked token by token
against proxytool's own decoder on the tiny models. No vLLM needed."""

from dataclasses import dataclass, field
from enum import Enum, auto
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import proxy_setup, random_prompts
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

    def add(self, request: Request) -> None:
        slot = self.slots.index(None) if None in self.slots else len(self.slots)
        self.slots[slot : slot + 1] = [request]
        self.added.append((slot, request.params, list(request.prompt), request.output))

    def remove(self, request: Request) -> None:
        slot = self.slots.index(request)
        self.slots[slot] = None
        self.removed.append(slot)

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
            return
        with torch.no_grad():
            rows = [self.base(torch.tensor([r.prompt + r.output])).logits[0, -1].float() for r in self.slots]
        logits = torch.stack(rows)
        if self.pad_columns:  # a padded vocabulary whose padding would win unless trimmed
            logits = torch.cat([logits, torch.full((len(rows), self.pad_columns), 1e4)], dim=-1)
        logits = self.plugin.apply(logits)
        for slot, request in enumerate(self.slots):
            request.output.append(int(logits[slot].argmax()))
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


def vllm_config(base, max_model_len=256):
    return SimpleNamespace(
        model_config=SimpleNamespace(model=str(base), tokenizer=str(base), max_model_len=max_model_len)
    )


def plugin_for(base, experts, antis, alphas, **kwargs):
    config = PluginConfig(tuple(map(str, experts)), tuple(map(str, antis)), tuple(alphas), "float32", "cpu")
    return ProxyTuningLogitsProcessor(vllm_config(base, **kwargs), torch.device("cpu"), False, config=config)


@pytest.fixture(scope="module")
def base_model(tiny_models):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float32).eval()


def prompt_ids(tiny_models, n, seed):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["base"])
    return [tokenizer(p)["input_ids"] for p in random_prompts(n, seed=seed)]


def reference(tiny_models, experts, antis, request: Request, alphas) -> list[int]:
    """proxytool's own greedy decode of one request (its α, or the server's)."""
    models = load_proxy_models(
        proxy_setup(tiny_models["base"], experts=[str(e) for e in experts], anti_experts=[str(a) for a in antis])
    )
    alpha = request.alpha if request.alpha is not None else alphas
    alpha = alpha if isinstance(alpha, list) else [alpha] * len(experts)
    prompts = [TokenPrompt(tuple(request.prompt))]
    (done,) = complete(models, prompts, max_new_tokens=request.max_tokens, ignore_eos=True, alphas=alpha)
    return done.token_ids


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
    driver.run(script)
    assert not plugin.slots  # every finished request left the plugin's slots
    for i, request in enumerate(requests):
        assert request.output == reference(t, experts, antis, request, alphas), f"request {i}"
    unsteered = [reference(t, experts, antis, Request(r.prompt, r.max_tokens, alpha=0.0), alphas) for r in requests]
    assert sum(r.output != u for r, u in zip(requests, unsteered)) >= 4  # the pair does change the tokens


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
