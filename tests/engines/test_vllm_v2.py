"""The Model Runner V2 adapter under a fake runner: the calls vLLM's MRV2 makes (add_request on recycled
slots, apply_staged_writes every step, apply over reordered rows with k draft tokens per request and a
token history on the device, chunked prefill, preemption with resumption, logits split in chunks),
with greedy verification of the drafts; every request's tokens are checked against proxytool's own
decoder on the tiny models. No vLLM needed."""

import random
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from engine_helpers import prompt_ids, proxy_setup, reference

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete
from proxytool.decoding.setup import load_proxy_models
from proxytool.engines.steering import EXTRA_ARG, PluginConfig
from proxytool.engines.vllm import ProxyTuningLogitsProcessor
from proxytool.engines.vllm_v2 import ProxyTuningLogitsProcessorV2
from proxytool.errors import ProxyToolError

VOCAB = 320  # the tiny tokenizer's (the expert's logits are padded beyond it)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(eq=False)
class Request:
    prompt: list[int]
    max_tokens: int
    alpha: object = None  # extra_args[EXTRA_ARG], or None for the server's α
    chunk: int | None = None  # prefill chunk size (None: the whole fill in one step)
    output: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)  # what the drafter proposes from (the expected tokens)

    @property
    def params(self):
        return SimpleNamespace(extra_args=None if self.alpha is None else {EXTRA_ARG: self.alpha})


@dataclass(eq=False)
class Running:
    """A request in a slot: the tokens vLLM prefills (prompt, and output on resumption) and how far."""

    request: Request
    slot: int
    fill: list[int]
    computed: int = 0


class FakeRunnerV2:
    """Model Runner V2 as a custom logits processor sees it (vllm/v1/worker/gpu/sample/logits_processor/
    interface.py): slots popped from a free list, the token history in ``req_states``, one
    ``apply_staged_writes`` per step, rows in a new order every step, k + 1 rows per request with k
    draft tokens, greedy verification (drafts kept while each is the argmax of the row before it)."""

    def __init__(self, base, k: int = 0, max_reqs: int = 8, max_len: int = 128, seed: int = 0, pad_columns: int = 16):
        self.base, self.k, self.pad_columns = base, k, pad_columns
        self.rng = random.Random(seed)
        self.req_states = SimpleNamespace(
            device=torch.device("cpu"),
            max_num_reqs=max_reqs,
            vocab_size=VOCAB + pad_columns,
            all_token_ids=SimpleNamespace(gpu=torch.zeros(max_reqs, max_len, dtype=torch.int32)),
            prompt_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
            prefill_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
            total_len=SimpleNamespace(gpu=torch.zeros(max_reqs, dtype=torch.int32)),
        )
        self.free = list(range(max_reqs))  # RequestState.free_indices: pop() takes, remove appends
        self.needs_processing = np.zeros(max_reqs, dtype=bool)
        self.running: dict[Request, Running] = {}
        self.paused: set[Request] = set()
        self.processor = None
        self.t = 0
        self.applies: list[int] = []  # per step: apply calls made
        self.split: set[int] = set()  # steps whose logits go to apply in two chunks (as the rejection sampler may)
        self.corrupt = 0.4  # chance that a draft run has one wrong token (so some drafts are rejected)
        self.after_apply = None
        self.drafted = self.accepted = 0  # draft tokens proposed, and kept by the verification

    def build(self, config: PluginConfig, vllm_config):
        self.processor = ProxyTuningLogitsProcessorV2(vllm_config, self.req_states, config=config)
        return self.processor

    def add(self, request: Request) -> None:
        slot = self.free.pop()
        fill = request.prompt + request.output  # a resumed request prefills its output too
        states = self.req_states
        states.prompt_len.np[slot] = len(request.prompt)
        states.prefill_len.np[slot] = len(fill)
        states.all_token_ids.gpu[slot, : len(fill)] = torch.tensor(fill, dtype=torch.int32)
        states.total_len.gpu[slot] = len(fill)
        self.needs_processing[slot] = self.processor.add_request(slot, request.params)
        self.running[request] = Running(request, slot, fill)

    def remove(self, request: Request) -> None:
        """The request ends or is preempted: its slot is free again (the processor is not told)."""
        self.free.append(self.running.pop(request).slot)
        self.paused.discard(request)

    def _drafts(self, run: Running) -> list[int]:
        request = run.request
        room = request.max_tokens - len(request.output) - 1
        drafts = request.reference[len(request.output) : len(request.output) + min(self.k, room)]
        if drafts and self.rng.random() < self.corrupt:
            i = self.rng.randrange(len(drafts))
            drafts[i] = (drafts[i] + 1) % VOCAB
        return drafts

    def step(self) -> None:
        self.processor.apply_staged_writes()
        batch = [r for r in self.running.values() if r.request not in self.paused]
        self.rng.shuffle(batch)  # rows are reordered every step
        if not batch:
            self.applies.append(0)
            self.t += 1
            return
        rows, plans = [], []
        for run in batch:
            tokens = self._tokens(run)
            if run.computed < len(run.fill):  # a prompt chunk
                end = min(len(run.fill), run.computed + (run.request.chunk or len(run.fill)))
                seq, inputs = run.fill[:end], [run.fill[end - 1]]
                plans.append((run, end, []))
            else:
                drafts = self._drafts(run)
                seq, inputs = tokens + drafts, [tokens[-1]] + drafts
                plans.append((run, None, drafts))
            start = len(seq) - len(inputs)
            with torch.no_grad():
                scores = self.base(torch.tensor([seq])).logits[0, -len(inputs) :].float()
            for j, token in enumerate(inputs):
                rows.append((run.slot, j, token, start + j, scores[j]))
        logits = torch.stack([r[4] for r in rows])
        if self.pad_columns:  # a padded vocabulary whose padding would win unless trimmed
            logits = torch.cat([logits, torch.full((len(rows), self.pad_columns), 1e4)], dim=-1)
        idx_mapping_np = np.array([run.slot for run in batch], dtype=np.int32)
        counts = [1 + len(drafts) for _, _, drafts in plans]
        if np.any(self.needs_processing[idx_mapping_np]):
            cuts = [0, len(batch) // 2, len(batch)] if self.t in self.split and len(batch) > 1 else [0, len(batch)]
            self.applies.append(len(cuts) - 1)
            for a, b in zip(cuts, cuts[1:]):
                lo, hi = sum(counts[:a]), sum(counts[:b])
                ctx = self._context(rows[lo:hi], idx_mapping_np[a:b])
                logits[lo:hi] = self.processor.apply(logits[lo:hi].clone(), ctx)
            if self.after_apply:
                self.after_apply(self)
        else:
            self.applies.append(0)
        row = 0
        for (run, end, drafts), count in zip(plans, counts):
            width = logits.shape[1] if self.needs_processing[run.slot] else VOCAB  # steered: padding trimmed
            chosen = logits[row : row + count, :width].argmax(-1).tolist()
            row += count
            if end is not None:
                run.computed = end
                if end < len(run.fill):
                    continue  # the sample of a chunk that does not end the prompt is discarded
                emitted = chosen[:1]
            else:
                emitted = []
                for j, target in enumerate(chosen):  # greedy verification
                    emitted.append(target)
                    if j == len(drafts) or drafts[j] != target:
                        break
                self.drafted += len(drafts)
                self.accepted += len(emitted) - 1
            request = run.request
            emitted = emitted[: request.max_tokens - len(request.output)]
            total = int(self.req_states.total_len.gpu[run.slot])
            self.req_states.all_token_ids.gpu[run.slot, total : total + len(emitted)] = torch.tensor(emitted)
            self.req_states.total_len.gpu[run.slot] = total + len(emitted)
            request.output.extend(emitted)
            if len(request.output) == request.max_tokens:
                self.remove(request)
        self.t += 1

    def _tokens(self, run: Running) -> list[int]:
        return run.request.prompt + run.request.output

    def _context(self, rows, idx_mapping_np):
        def column(i, dtype=torch.int32):
            return torch.tensor([r[i] for r in rows], dtype=dtype)

        return SimpleNamespace(
            expanded_idx_mapping=column(0),
            idx_mapping=torch.from_numpy(idx_mapping_np),
            idx_mapping_np=idx_mapping_np,
            expanded_local_pos=column(1),
            input_ids=column(2),
            pos=column(3, torch.int64),
            seq_lens_upper_bound_np=np.array([r[3] + 1 for r in rows if r[1] == 0]),
        )

    def run(self, script: dict[int, list]) -> None:
        """``script[step]``: calls made before that step (adds, preemptions, pauses); runs until all end."""
        while self.running or any(s >= self.t for s in script):
            for call in script.get(self.t, []):
                call(self)
            self.step()


@dataclass(frozen=True)
class Call:
    step: int
    source: int
    kind: str
    rows: int
    tokens: int


def count_forwards(processor, driver) -> list[Call]:
    """Every prefill and extend of the pair's sources (one forward each)."""
    calls = []

    def wrap(n, kind, inner):
        def counted(*args, **kwargs):
            rows, tokens = (len(args[0]), 0) if kind == "prefill" else tuple(args[1].shape)
            calls.append(Call(driver.t, n, kind, rows, tokens))
            return inner(*args, **kwargs)

        return counted

    for n, source in enumerate(processor.models.sources):
        for kind in ("prefill", "extend"):
            setattr(source, kind, wrap(n, kind, getattr(source, kind)))
    return calls


def no_drafts_kept(driver) -> None:
    """After every apply: each request stepping on its own holds exactly its tokens (no draft)."""
    pairs = driver.processor.pairs
    for request, track in pairs.tracks.items():
        if track.stepper is not None:
            fed = len(request.prompt) + track.fed
            assert {state.length for state in track.stepper._states.values()} == {fed}


def vllm_config(base, speculative: bool = False, **model):
    return SimpleNamespace(
        model_config=SimpleNamespace(model=str(base), tokenizer=str(base), max_model_len=256, **model),
        speculative_config=SimpleNamespace(num_speculative_tokens=3) if speculative else None,
    )


def config_of(experts, antis, alphas):
    return PluginConfig(tuple(map(str, experts)), tuple(map(str, antis)), tuple(alphas), "float32", "cpu")


@pytest.mark.parametrize("pairs", ["one pair", "two pairs"])
def test_every_row_with_draft_tokens_equals_proxytool_decode(tiny_models, base_model, pairs):
    """Speculative steps (k = 3 drafts, some wrong), chunked prefill, preemption with resumption, a
    request not scheduled for two steps, slots recycled, rows reordered, logits split in two applies."""
    t = tiny_models
    experts, antis = [t["expert"]], [t["anti"]]
    if pairs == "two pairs":
        experts, antis = [t["expert"], t["gpt2"]], [t["anti"], t["anti"]]
    alphas = [1.0] * len(experts)
    p = prompt_ids(t, 7, seed=21)
    a = Request(p[0], 12)
    b = Request(p[1], 6, alpha=0.5)  # ends early: its slot goes to g
    c = Request(p[2] * 3, 9, alpha=-0.7, chunk=5)  # a long prompt prefilled in chunks
    d = Request(p[3], 10, alpha=2.0 if pairs == "one pair" else [2.0, -1.0])
    e = Request(p[4], 11, alpha=1.5)  # preempted, then resumed with its output prefilled
    f = Request(p[5], 8, alpha=0)  # the base alone: declined, never fed to the pair
    g = Request(p[6], 7, alpha=[1.0] * len(experts))
    requests = [a, b, c, d, e, f, g]
    for r in requests:
        r.reference = reference(t, experts, antis, r, alphas)
    driver = FakeRunnerV2(base_model, k=3, seed=5)
    processor = driver.build(config_of(experts, antis, alphas), vllm_config(t["base"], speculative=True))
    calls = count_forwards(processor, driver)
    driver.after_apply = no_drafts_kept
    driver.split = {3, 6}
    script = {
        0: [lambda x: x.add(a), lambda x: x.add(b), lambda x: x.add(c), lambda x: x.add(f)],
        1: [lambda x: x.add(d), lambda x: x.add(e)],
        3: [lambda x: x.remove(e)],  # preemption: the slot is freed, nothing tells the processor
        4: [lambda x: x.paused.add(a)],  # not scheduled for two steps
        5: [lambda x: x.add(e)],  # resumption: prompt and output prefilled again, maybe in another slot
        6: [lambda x: x.paused.discard(a), lambda x: x.add(g)],
    }
    driver.run(script)
    for i, request in enumerate(requests):
        assert request.output == request.reference, f"request {'abcdefg'[i]}"
    unsteered = [reference(t, experts, antis, Request(r.prompt, r.max_tokens, alpha=0.0), alphas) for r in requests]
    assert sum(r.output != u for r, u in zip(requests, unsteered)) >= 4  # the pair does change the tokens
    assert max(driver.applies) == 2  # a step's logits did go to apply in two chunks
    assert 0 < driver.accepted < driver.drafted and len(c.prompt) > 2 * c.chunk  # drafts kept and rejected
    extends = [c for c in calls if c.kind == "extend" and c.source == 0]
    assert all(c.rows == 1 for c in extends)  # with drafts, each request steps on its own
    assert max(c.tokens for c in extends) >= 4  # new tokens and 3 drafts in one forward
    prefills = [c for c in calls if c.kind == "prefill" and c.source == 0]
    assert len(prefills) == 8  # a, b, c, d, e, g, e resumed, a back from its pause (its state went)
    driver.processor.apply_staged_writes()
    driver.processor.apply_staged_writes()
    assert not processor.pairs.tracks and not processor.pairs.rows  # the state of ended requests goes


def test_without_drafts_the_pair_runs_once_per_step_for_every_row(tiny_models, base_model):
    t = tiny_models
    alphas = [None, 0.5, -0.7, 0.5, 2.0]  # two rows share α: one combine for both
    requests = [Request(p, 6, alpha=a) for p, a in zip(prompt_ids(t, 5, seed=11), alphas)]
    for r in requests:
        r.reference = reference(t, [t["expert"]], [t["anti"]], r, [1.0])
    driver = FakeRunnerV2(base_model, k=0, seed=3)
    processor = driver.build(config_of([t["expert"]], [t["anti"]], [1.0]), vllm_config(t["base"]))
    calls = count_forwards(processor, driver)
    driver.run({0: [lambda x, r=r: x.add(r) for r in requests]})
    for n in range(len(processor.models.sources)):
        assert [(c.step, c.kind, c.rows) for c in calls if c.source == n] == [(0, "prefill", 5)] + [
            (step, "extend", 5) for step in range(1, 6)
        ]  # the five added in one step are prefilled together
    for request in requests:
        assert request.output == request.reference


def test_unsteered_requests_are_declined_and_expert_equal_to_anti_is_the_base(tiny_models, base_model):
    t = tiny_models
    p = prompt_ids(t, 3, seed=8)
    base_alone = load_proxy_models(proxy_setup(t["base"]))

    def solo(request):
        prompts = [TokenPrompt(tuple(request.prompt))]
        return complete(base_alone, prompts, max_new_tokens=request.max_tokens, ignore_eos=True)[0].token_ids

    for experts, alpha in (([t["anti"]], None), ([t["expert"]], 0.0), ([t["expert"]], [0])):
        requests = [Request(q, 6 + i, alpha=alpha) for i, q in enumerate(p)]
        for r in requests:
            r.reference = solo(r)
        driver = FakeRunnerV2(base_model, k=2, seed=1)
        processor = driver.build(config_of(experts, [t["anti"]], [3.0]), vllm_config(t["base"]))
        driver.run({0: [lambda x, r=r: x.add(r) for r in requests[:2]], 2: [lambda x, r=requests[2]: x.add(r)]})
        assert [r.output for r in requests] == [r.reference for r in requests]
        if alpha is not None:  # declined: vLLM never calls apply for a batch of such requests
            assert not processor.slots and not any(driver.applies)
    assert processor.add_request(0, SimpleNamespace(extra_args={EXTRA_ARG: 1.0})) is True
    assert processor.add_request(0, SimpleNamespace(extra_args={EXTRA_ARG: 0})) is False
    assert not processor.slots  # a request added to a slot replaces its previous occupant


def test_the_v1_class_built_by_runner_v2_is_the_v2_adapter(tiny_models, monkeypatch):
    """The entry point names the V1 class; MRV2 builds it with (vllm_config, req_states)."""
    monkeypatch.delenv("PROXYTOOL_VLLM_EXPERTS", raising=False)
    states = FakeRunnerV2(None).req_states
    off = ProxyTuningLogitsProcessor(vllm_config(tiny_models["base"]), states)
    assert type(off) is ProxyTuningLogitsProcessorV2 and off.models is None
    assert off.add_request(0, SimpleNamespace(extra_args=None)) is False
    logits = torch.randn(1, VOCAB)
    ctx = SimpleNamespace(idx_mapping_np=np.array([0]))
    assert torch.equal(off.apply(logits.clone(), ctx), logits)
    config = config_of([tiny_models["expert"]], [tiny_models["anti"]], [1.0])
    on = ProxyTuningLogitsProcessor(vllm_config(tiny_models["base"]), states, config=config)
    assert type(on) is ProxyTuningLogitsProcessorV2 and on.models is not None
    v1 = ProxyTuningLogitsProcessor(vllm_config(tiny_models["base"]), torch.device("cpu"), False, config=config)
    assert type(v1) is ProxyTuningLogitsProcessor and v1.models is not None


def test_a_second_instance_on_one_engine_stays_off_and_bad_values_are_refused(tiny_models, monkeypatch):
    config = config_of([tiny_models["expert"]], [tiny_models["anti"]], [1.0])
    engine, states = vllm_config(tiny_models["base"]), FakeRunnerV2(None).req_states
    first = ProxyTuningLogitsProcessorV2(engine, states, config=config)
    second = ProxyTuningLogitsProcessor(engine, states, config=config)  # the entry point and the flag
    assert first.models is not None and second.models is None
    with pytest.raises(ProxyToolError, match="--enable-prompt-embeds"):
        ProxyTuningLogitsProcessorV2(vllm_config(tiny_models["base"], enable_prompt_embeds=True), states, config=config)
    monkeypatch.setenv("PROXYTOOL_VLLM_EXPERTS", str(tiny_models["expert"]))
    with pytest.raises(ValueError, match="finite"):
        ProxyTuningLogitsProcessorV2.validate_params(SimpleNamespace(extra_args={EXTRA_ARG: float("nan")}))
    ProxyTuningLogitsProcessorV2.validate_params(SimpleNamespace(extra_args={EXTRA_ARG: [0.5]}))


def test_a_layout_other_than_the_interface_says_is_refused(tiny_models, base_model):
    """Rows of one request at positions that do not follow each other, or a first row whose input is not
    the request's last token: an error, not a wrong steer."""
    t = tiny_models
    driver = FakeRunnerV2(base_model)
    processor = driver.build(config_of([t["expert"]], [t["anti"]], [1.0]), vllm_config(t["base"]))
    request = Request(prompt_ids(t, 1, seed=2)[0], 4)
    driver.add(request)
    processor.apply_staged_writes()
    n = len(request.prompt)
    logits = torch.zeros(2, VOCAB)
    gap = driver._context([(7, 0, request.prompt[-1], n - 1, None), (7, 1, 5, n + 1, None)], np.array([7]))
    with pytest.raises(RuntimeError, match="one position after another"):
        processor.apply(logits, gap)
    wrong = driver._context([(7, 0, request.prompt[-1] + 1, n - 1, None)], np.array([7]))
    with pytest.raises(RuntimeError, match="not the one vLLM fed"):
        processor.apply(logits[:1], wrong)


def test_the_modules_are_light_and_subclass_both_runners_bases_where_vllm_imports(tmp_path):
    """Without vLLM no torch is imported; with a vLLM whose two interfaces import (stand-ins here), the
    V1 class subclasses both bases (MRV2 refuses group plugins that are not its own) and the MRV2
    adapter subclasses MRV2's only."""
    code = "import sys, proxytool.engines.vllm, proxytool.engines.vllm_v2; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"
    for module in ("vllm/v1/sample/logits_processor", "vllm/v1/worker/gpu/sample/logits_processor"):
        folder = tmp_path / module
        folder.mkdir(parents=True)
        for part in folder.relative_to(tmp_path).parents:
            (tmp_path / part / "__init__.py").touch()
        (folder / "__init__.py").write_text("from abc import ABC\n\nclass LogitsProcessor(ABC):\n    pass\n")
    (tmp_path / "vllm/v1/worker/gpu/sample/logits_processor/interface.py").write_text(
        "from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor\n"
    )
    code = textwrap.dedent("""
        from vllm.v1.sample.logits_processor import LogitsProcessor as V1
        from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2
        from proxytool.engines.vllm import ProxyTuningLogitsProcessor as A
        from proxytool.engines.vllm_v2 import ProxyTuningLogitsProcessorV2 as B
        print(issubclass(A, V1), issubclass(A, V2), issubclass(B, V2), issubclass(B, V1))
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.split() == ["True", "True", "True", "False"]
