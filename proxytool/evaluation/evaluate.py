"""`eval`: score base alone, expert alone, proxy-tuned (per alpha) and a directly tuned model on a task.

Every system decodes greedily with the same engine (:mod:`proxytool.decoding`). Generate tasks score
the completion (:meth:`Task.score`); choice tasks score each continuation by its teacher-forced
log-likelihood under the system's combined scores, the distribution the decoder samples from
(:func:`continuation_logprobs`), and pick the best (:meth:`Task.score_choices`).

The headline number is the paper's *gap closed*: ``(proxy - base) / (target - base)``, the target
being the directly tuned model when one is given, else the expert.

System names are the API: ``base``, ``expert``, ``direct``, and ``proxy`` (one alpha) or
``proxy@<alpha>`` (a sweep). Library code never prints; callers pass progress callbacks.
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch

from proxytool.decoding.generate import ExpertPair, ProxyModels, complete, step_scores
from proxytool.decoding.setup import ProxySetup, load_proxy_models, resolve_roles
from proxytool.errors import ProxyToolError
from proxytool.evaluation import metrics
from proxytool.evaluation.tasks import Example, Task, load_task
from proxytool.files.atomic import write_text
from proxytool.models.loading import pick_device, pick_dtype
from proxytool.models.registry import ModelSpec, resolve

BASE, EXPERT, DIRECT, PROXY = "base", "expert", "direct", "proxy"
"""System names used in reports, output files and the gap-closed formula."""
DEFAULT_BATCH_SIZE = 8
GROUP_KEYS = ("split", "fact")
"""Example tags (polls: ``split`` and ``fact``) that reports break scores down by."""
DEFAULT_OUTPUT_ROOT = Path("runs/eval")

SystemFn = Callable[[Task, list[Example]], list]
"""A system as a function: ``(task, examples) -> outputs``, one per example: the completion text for
generate tasks, the list of per-choice log-likelihoods for choice tasks."""
ProgressFn = Callable[[str, int, int], None]
"""``(system, examples_done, examples_total)``, called when a system starts and after each batch."""


@dataclass
class SystemResult:
    """How one system did on the task.

    Attributes:
        name: System name (``base``, ``expert``, ``proxy@0.5``, ...).
        score: Mean per-example score (the task's metric, in [0, 1]).
        n: Examples scored.
        seconds: Wall time for generating and scoring.
        outputs: Per-example records (id, prompt, completion, answer, score; choice tasks add
            choices and choice_scores).
        alpha: The steering weight of a proxy system, else None.
    """

    name: str
    score: float
    n: int
    seconds: float
    outputs: list[dict] = field(repr=False)
    alpha: float | None = None


@dataclass
class Report:
    """Scores of every system on one task, and the settings that produced them.

    Attributes:
        task: Task name.
        metric: What the score measures (e.g. ``"pass@1"``).
        results: Results by system name, in the order they ran.
        meta: Resolved settings merged into report.json (models, alphas, decoding options, ...).
    """

    task: str
    metric: str
    results: dict[str, SystemResult]
    meta: dict = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """The system gap closed is measured against: ``direct`` if it ran, else ``expert``."""
        return next((name for name in (DIRECT, EXPERT) if name in self.results), None)

    @property
    def proxies(self) -> list[SystemResult]:
        """The proxy-tuned results (one per alpha), in run order."""
        return [r for name, r in self.results.items() if is_proxy(name)]

    def gap_closed(self) -> dict[str, float | None]:
        """``(proxy - base) / (target - base)`` per proxy system (None: no base/target, or no gap)."""
        base, target = self.results.get(BASE), self.results.get(self.target) if self.target else None
        if base is None or target is None:
            return {r.name: None for r in self.proxies}
        return {r.name: metrics.gap_closed(base.score, r.score, target.score) for r in self.proxies}

    def breakdown(self, key: str) -> dict[str, dict[str, float]]:
        """Mean score per value of a per-example tag (``split``, ``fact``): ``{group: {system: score}}``.

        Empty when the examples carry no such tag. Groups keep their first-seen order.
        """
        table: dict[str, dict[str, float]] = {}
        for name, result in self.results.items():
            groups: dict[str, list[float]] = {}
            for record in result.outputs:
                if key in record:
                    groups.setdefault(str(record[key]), []).append(record["score"])
            for group, scores in groups.items():
                table.setdefault(group, {})[name] = sum(scores) / len(scores)
        return table

    def breakdown_gap_closed(self, key: str) -> dict[str, dict[str, float | None]]:
        """Gap closed per group of :meth:`breakdown`: ``{group: {proxy system: gap}}``."""
        out = {}
        for group, scores in self.breakdown(key).items():
            base, target = scores.get(BASE), scores.get(self.target) if self.target else None
            out[group] = {
                r.name: None if base is None or target is None else metrics.gap_closed(base, scores[r.name], target)
                for r in self.proxies
                if r.name in scores
            }
        return out

    def to_json(self) -> dict:
        """Everything but the per-example outputs, as a JSON-friendly dict (report.json)."""
        gaps = self.gap_closed()
        by = {
            f"by_{key}": {"score": self.breakdown(key), "gap_closed": self.breakdown_gap_closed(key)}
            for key in GROUP_KEYS
            if self.breakdown(key)
        }
        systems = {
            name: {"score": r.score, "n": r.n, "seconds": round(r.seconds, 3), "alpha": r.alpha}
            for name, r in self.results.items()
        }
        sweep = [
            {"alpha": r.alpha, "system": r.name, "score": r.score, "gap_closed": gaps[r.name]} for r in self.proxies
        ]
        return {
            "task": self.task,
            "metric": self.metric,
            "target": self.target,
            "systems": systems,
            "gap_closed": gaps,
            "sweep": sweep,
            **by,
            **self.meta,
        }


def is_proxy(name: str) -> bool:
    """True for proxy system names (``proxy`` or ``proxy@<alpha>``)."""
    return name == PROXY or name.startswith(PROXY + "@")


def proxy_name(alpha: float, sweep: bool) -> str:
    """``proxy`` for a single alpha, ``proxy@<alpha>`` in a sweep (``proxy@0.5``, ``proxy@2``)."""
    if not sweep:
        return PROXY
    short = f"{alpha:g}"
    return f"{PROXY}@{short if float(short) == alpha else repr(alpha)}"


def metric_name(task: Task) -> str:
    """The task's headline metric, in words."""
    names = {
        "gsm8k": "accuracy (final number)",
        "humaneval": "pass@1 (greedy)",
        "truthfulqa-mc": "MC1 accuracy (log-likelihood)",
    }
    if task.name in names:
        return names[task.name]
    if task.name.startswith("polls"):
        return "accuracy (answer scored by value)"
    return "choice accuracy (log-likelihood)" if task.kind == "choice" else "accuracy (exact / numeric)"


def parse_alphas(text: str) -> list[float]:
    """Parse ``--alpha``: one number or a comma list (``"0.25,0.5,1,2"``).

    Raises:
        ProxyToolError: On an empty list, an entry that is not a finite number, or a repeated value.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ProxyToolError("--alpha: empty (expected a number or a comma list like 0.25,0.5,1,2)")
    alphas = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ProxyToolError(
                f"--alpha: {part!r} is not a finite number (expected a number or a comma list like 0.25,0.5,1,2)"
            )
        if value in alphas:
            raise ProxyToolError(f"--alpha: {part} is repeated")
        alphas.append(value)
    return alphas


# --------------------------------------------------------------------------- systems on the engine


def derived_systems(proxy: ProxyModels) -> dict[str, ProxyModels]:
    """Base alone and expert alone, made from the proxy's already loaded sources (nothing reloads).

    Args:
        proxy: Models loaded for one expert pair.

    Returns:
        ``{"base": ..., "expert": ...}``: each the same members with no pairs.
    """
    if len(proxy.pairs) != 1:
        raise ProxyToolError(f"eval takes exactly one expert (got {len(proxy.pairs)})")
    return {
        BASE: replace(proxy, base=proxy.base, pairs=[]),
        EXPERT: replace(proxy, base=proxy.pairs[0].expert, pairs=[]),
    }


def with_alpha(proxy: ProxyModels, alpha: float) -> ProxyModels:
    """The same loaded models steering with ``alpha`` (a copy: ``proxy`` is left as it was)."""
    pairs = [ExpertPair(alpha, p.expert, p.anti_expert) for p in proxy.pairs]
    return replace(proxy, pairs=pairs)


def engine_system(models: ProxyModels, max_new_tokens: int | None = None) -> SystemFn:
    """Wrap loaded models as a :data:`SystemFn`: greedy completions, or choice log-likelihoods.

    Args:
        models: The system's models (pairs empty for a single model).
        max_new_tokens: Generation budget; None uses the task's.
    """

    def run(task: Task, examples: list[Example]) -> list:
        prompts = [e.prompt for e in examples]
        if task.kind == "choice":
            return choice_logprobs(models, prompts, [task.continuations(e) for e in examples])
        budget = task.max_new_tokens if max_new_tokens is None else max_new_tokens
        return [c.text for c in complete(models, prompts, max_new_tokens=budget, stop=task.stop)]

    return run


def continuation_ids(tokenizer, prompt: str, continuation: str) -> list[int]:
    """Token ids of ``continuation`` as they would follow ``prompt``.

    Encodes ``prompt + continuation`` and keeps what follows the prompt's own ids when those are a
    prefix (so SentencePiece's leading-space handling matches running text); otherwise encodes the
    continuation alone. Special tokens are never added.
    """
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    if len(whole) > len(head) and whole[: len(head)] == head:
        return whole[len(head) :]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]


def choice_logprobs(
    models: ProxyModels, prompts: Sequence[str], continuations: Sequence[Sequence[str]]
) -> list[list[float]]:
    """Log-likelihood of each continuation of each prompt, all scored in one batch.

    Args:
        models: The system.
        prompts: One plain prompt per example (each role formats it itself).
        continuations: Per prompt, the texts to score after it.

    Returns:
        Per prompt, one summed log-probability per continuation.
    """
    rows = []
    for prompt, conts in zip(prompts, continuations):
        for cont in conts:
            ids = continuation_ids(models.tokenizer, prompt, cont)
            if not ids:
                raise ProxyToolError(f"choice {cont!r} encodes to no tokens; cannot score it")
            rows.append((prompt, ids))
    flat = continuation_logprobs(models, [p for p, _ in rows], [ids for _, ids in rows]) if rows else []
    out, start = [], 0
    for conts in continuations:
        out.append(flat[start : start + len(conts)])
        start += len(conts)
    return out


def continuation_logprobs(
    models: ProxyModels, prompts: Sequence[str], continuations: Sequence[Sequence[int]]
) -> list[float]:
    """Teacher-forced ``sum_t log_softmax(scores_t)[token_t]`` for each (prompt, continuation) row.

    ``scores_t`` is exactly what :func:`proxytool.decoding.generate.generate` samples from at that
    step (the proxy formula over the shared vocabulary; one model's logits when there are no pairs),
    computed with the same per-model KV caches: the prompts are prefilled, then the continuation
    tokens are appended one step at a time. Rows whose continuation has ended are fed padding whose
    logits are never read (causal attention keeps it from touching the rows' earlier scores).

    Args:
        models: The system.
        prompts: One prompt per row.
        continuations: One list of token ids per row (each non-empty).

    Returns:
        One log-likelihood per row.
    """
    longest = max(len(c) for c in continuations)
    pad = models.tokenizer.pad_token_id if models.tokenizer.pad_token_id is not None else 0
    totals = [0.0] * len(continuations)
    try:
        logits = {id(s): s.prefill(list(prompts)) for s in models.sources}
        for t in range(longest):
            logp = torch.log_softmax(step_scores(models, logits), dim=-1)
            tokens = torch.tensor([c[t] if t < len(c) else pad for c in continuations], dtype=torch.long)
            picked = logp.gather(-1, tokens.to(logp.device).unsqueeze(-1)).squeeze(-1).tolist()
            for i, cont in enumerate(continuations):
                if t < len(cont):
                    totals[i] += picked[i]
            if t + 1 < longest:
                logits = {id(s): s.step(tokens) for s in models.sources}
    finally:
        for source in models.sources:
            source.release()
    return totals


# --------------------------------------------------------------------------- evaluation


def evaluate(
    task: Task,
    systems: dict[str, ProxyModels | SystemFn],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int | None = None,
    on_progress: ProgressFn | None = None,
) -> Report:
    """Run and score each system on every example of ``task``, one system after another.

    Args:
        task: The task.
        systems: By name (see the module doc): loaded models, or a :data:`SystemFn`.
        batch_size: Examples per call (choice tasks: all choices of these examples in one batch).
        max_new_tokens: Override of the task's generation budget for engine systems.
        on_progress: Progress callback.

    Returns:
        The report (``meta`` left empty for the caller).
    """
    if batch_size < 1:
        raise ProxyToolError(f"--batch-size must be >= 1 (got {batch_size})")
    results = {}
    for name, system in systems.items():
        fn = engine_system(system, max_new_tokens) if isinstance(system, ProxyModels) else system
        alpha = _alpha_of(system) if is_proxy(name) else None
        results[name] = run_system(task, name, fn, batch_size, on_progress, alpha)
    return Report(task=task.name, metric=metric_name(task), results=results)


def _alpha_of(system) -> float | None:
    pairs = getattr(system, "pairs", None)
    return pairs[0].alpha if pairs else None


def run_system(
    task: Task,
    name: str,
    fn: SystemFn,
    batch_size: int,
    on_progress: ProgressFn | None = None,
    alpha: float | None = None,
) -> SystemResult:
    """Run one system over the task in batches and score every example."""
    report = on_progress or (lambda *_: None)
    examples, records = task.examples, []
    start = time.perf_counter()
    report(name, 0, len(examples))
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        outputs = fn(task, batch)
        if len(outputs) != len(batch):
            raise ProxyToolError(f"system {name} returned {len(outputs)} outputs for {len(batch)} examples")
        records += [score_example(task, ex, out) for ex, out in zip(batch, outputs)]
        report(name, len(records), len(examples))
    seconds = time.perf_counter() - start
    return SystemResult(
        name=name,
        score=aggregate(task, [r["score"] for r in records]),
        n=len(records),
        seconds=seconds,
        outputs=records,
        alpha=alpha,
    )


def score_example(task: Task, example: Example, output) -> dict:
    """One per-example record: id, prompt, completion, answer, score (+ choices for choice tasks)."""
    record = {"id": example.id, "prompt": example.prompt}
    record.update({key: example.meta[key] for key in GROUP_KEYS if key in example.meta})
    if task.kind == "choice":
        scores = [float(s) for s in output]
        best = max(range(len(scores)), key=lambda i: scores[i])
        record.update(
            completion=example.choices[best],
            answer=example.answer,
            score=task.score_choices(example, scores),
            choices=example.choices,
            choice_scores=scores,
        )
    else:
        record.update(completion=output, answer=example.answer, score=task.score(example, output))
    return record


def aggregate(task: Task, scores: list[float]) -> float:
    """The task's score from per-example scores: the mean (HumanEval: mean greedy pass@1)."""
    if not scores:
        return 0.0
    if task.name == "humaneval":  # one greedy sample per problem: pass@1 = c
        scores = [metrics.pass_at_k(1, int(s >= 1.0), 1) for s in scores]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- the whole run


@dataclass
class EvalConfig:
    """Everything ``proxytool eval`` needs.

    Attributes:
        task: A built-in task name or a question/answer JSONL path (see :func:`load_task`).
        setup: Base, the one expert (and anti-expert), loading options. ``setup.alphas`` is ignored.
        alphas: Proxy steering weights; more than one is a sweep.
        direct: A directly tuned large model (the gap-closed target), loaded on its own after the
            others are freed; it gets the expert's prompt format (``formats["expert"]``) if one is
            set, and the base's quantization.
        limit: Keep the first N examples.
        data_dir: Passed to :func:`load_task`.
        few_shot: Passed to :func:`load_task`.
        max_new_tokens: Override of the task's generation budget.
        batch_size: Examples per batch.
        output: Output folder (default ``runs/eval/<task>-<timestamp>``).
        command: The command line, recorded in report.md.
    """

    task: str
    setup: ProxySetup
    alphas: list[float] = field(default_factory=lambda: [1.0])
    direct: str | None = None
    limit: int | None = None
    data_dir: Path | None = None
    few_shot: int | None = None
    max_new_tokens: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    output: Path | None = None
    command: str = ""


@dataclass
class Prepared:
    """A checked config: the task loaded, model names resolved, the output folder created."""

    config: EvalConfig
    task: Task
    output: Path
    models: dict


def prepare(config: EvalConfig) -> Prepared:
    """Check everything that can fail before a model loads: task, data, alphas, names, output folder."""
    if not config.alphas:
        raise ProxyToolError("--alpha: give at least one value")
    if config.batch_size < 1:
        raise ProxyToolError(f"--batch-size must be >= 1 (got {config.batch_size})")
    if config.max_new_tokens is not None and config.max_new_tokens < 0:
        raise ProxyToolError(f"--max-new-tokens must be >= 0 (got {config.max_new_tokens})")
    if len(config.setup.experts) != 1:
        raise ProxyToolError(f"eval takes exactly one --expert (got {len(config.setup.experts)})")
    task = load_task(config.task, limit=config.limit, data_dir=config.data_dir, few_shot=config.few_shot)
    if not task.examples:
        raise ProxyToolError(f"task {task.name}: no examples to evaluate (--limit {config.limit})")
    base, [(_, expert, anti)] = resolve_roles(replace(config.setup, alphas=[config.alphas[0]]))
    models = {BASE: base, EXPERT: expert, "anti_expert": anti}
    if config.direct is not None:
        models[DIRECT] = resolve(config.direct)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(config.output) if config.output is not None else DEFAULT_OUTPUT_ROOT / f"{task.name}-{stamp}"
    try:
        (output / "outputs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProxyToolError(f"--output {output}: cannot create the folder ({err.strerror or err})") from None
    return Prepared(config, task, output, models)


def run_eval(
    config: EvalConfig, on_progress: ProgressFn | None = None, on_status: Callable[[str], None] | None = None
) -> tuple[Report, Path]:
    """Load the models once, run every system, write the report files.

    Base alone, expert alone and the proxy at each alpha share one set of loaded models; the direct
    model (if any) is loaded after those are released, so peak memory is the larger of the two.

    Args:
        config: What to run.
        on_progress: Per-system progress callback.
        on_status: Called with a short message before each slow phase (loading models).

    Returns:
        The report and the folder it was written to.
    """
    return run_prepared(prepare(config), on_progress, on_status)


def run_prepared(
    prep: Prepared, on_progress: ProgressFn | None = None, on_status: Callable[[str], None] | None = None
) -> tuple[Report, Path]:
    """:func:`run_eval` after :func:`prepare` (so callers can report input errors before any display)."""
    config, status = prep.config, on_status or (lambda _: None)
    task, started = prep.task, datetime.now().astimezone().isoformat(timespec="seconds")
    status("loading base, expert and anti-expert")
    setup = replace(config.setup, alphas=[config.alphas[0]])
    report = evaluate(
        task,
        _proxy_systems(load_proxy_models(setup), config.alphas),
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        on_progress=on_progress,
    )
    if config.direct is not None:
        gc.collect()  # the proxy's models are unreferenced now: free them before the direct model loads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        status(f"loading the directly tuned model {config.direct}")
        direct = load_proxy_models(direct_setup(config))
        report.results.update(
            evaluate(
                task,
                {DIRECT: direct},
                batch_size=config.batch_size,
                max_new_tokens=config.max_new_tokens,
                on_progress=on_progress,
            ).results
        )
    report.meta = _meta(prep, started)
    write_report(report, prep.output, config.command)
    return report, prep.output


def _proxy_systems(proxy: ProxyModels, alphas: list[float]) -> dict[str, ProxyModels]:
    systems = derived_systems(proxy)
    for alpha in alphas:
        systems[proxy_name(alpha, len(alphas) > 1)] = with_alpha(proxy, alpha)
    return systems


def direct_setup(config: EvalConfig) -> ProxySetup:
    """How the direct model loads: alone, the base's dtype/device/quantization, the expert's format."""
    s = config.setup
    formats = {"base": s.formats["expert"]} if "expert" in s.formats else {}
    return ProxySetup(
        base=config.direct,
        dtype=s.dtype,
        device=s.device,
        quantize_base=s.quantize_base,
        formats=formats,
        share_weights=s.share_weights,
    )


def _describe(spec: ModelSpec) -> dict:
    return {"name": spec.name, "source": spec.source, "kind": spec.kind, "revision": spec.revision}


def _meta(prep: Prepared, started: str) -> dict:
    import transformers

    import proxytool

    c, task = prep.config, prep.task
    device = pick_device(c.setup.device)
    return {
        "task_info": {
            "name": task.name,
            "kind": task.kind,
            "source": task.source,
            "n_examples": len(task.examples),
            "max_new_tokens": task.max_new_tokens if c.max_new_tokens is None else c.max_new_tokens,
            "stop": task.stop,
            "limit": c.limit,
            "few_shot": c.few_shot,
            "data_dir": None if c.data_dir is None else str(c.data_dir),
        },
        "models": {role: _describe(spec) for role, spec in prep.models.items()},
        "alphas": list(c.alphas),
        "settings": {
            "decoding": "greedy",
            "batch_size": c.batch_size,
            "dtype": c.setup.dtype,
            "device": c.setup.device,
            "resolved_device": device,
            "resolved_dtype": str(pick_dtype(c.setup.dtype, device)).removeprefix("torch."),
            "quantize_base": c.setup.quantize_base,
            "formats": dict(c.setup.formats),
            "share_weights": c.setup.share_weights,
        },
        "command": c.command,
        "started_at": started,
        "versions": {
            "proxytool": getattr(proxytool, "__version__", ""),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


# --------------------------------------------------------------------------- output files


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The summary table (headers, rows) shared by the terminal and report.md."""
    gaps = report.gap_closed()
    headers = ["system", "alpha", "n", "score (%)", "gap closed", "seconds"]
    rows = []
    for name, r in report.results.items():
        gap = "" if not is_proxy(name) else ("n/a" if gaps.get(name) is None else f"{100 * gaps[name]:.1f}%")
        rows.append(
            [name, "" if r.alpha is None else f"{r.alpha:g}", str(r.n), f"{100 * r.score:.1f}", gap, f"{r.seconds:.1f}"]
        )
    return headers, rows


def models_note(report: Report) -> str:
    """One line naming the models of each role."""
    models = report.meta.get("models", {})
    return "; ".join(f"{role.replace('_', '-')}: {spec['name']}" for role, spec in models.items())


def target_note(report: Report) -> str:
    """One line saying what gap closed is measured against."""
    target = report.target
    name = report.meta.get("models", {}).get(target, {}).get("name", "")
    why = "the directly tuned model" if target == DIRECT else "the expert, as no --direct was given"
    return f"gap closed = (proxy - base) / (target - base); target = {target} ({name}): {why}"


def markdown(report: Report, command: str = "") -> str:
    """report.md: title, the table, the models, what the target is, and the command."""
    headers, rows = table_rows(report)
    lines = [
        f"# {report.task}: {report.metric}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Models: {models_note(report)}.",
        "",
        target_note(report) + ".",
        "",
        "Greedy decoding for every system; score = " + report.metric + ".",
        "",
    ]
    for key in GROUP_KEYS:
        lines += breakdown_lines(report, key)
    if len(report.proxies) > 1:
        lines += ["![score vs alpha](alpha_sweep.png)", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def breakdown_lines(report: Report, key: str) -> list[str]:
    """A markdown table of scores (%) per ``key`` group and system, with gap closed per proxy."""
    table = report.breakdown(key)
    if not table:
        return []
    gaps = report.breakdown_gap_closed(key)
    systems = list(report.results)
    proxies = [r.name for r in report.proxies]
    headers = [key, "n"] + systems + [f"gap {p}" for p in proxies]
    counts: dict[str, int] = {}
    for record in next(iter(report.results.values())).outputs:
        if key in record:
            counts[str(record[key])] = counts.get(str(record[key]), 0) + 1
    lines = [f"By {key} (score %, gap closed %):", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for group, scores in table.items():
        cells = [group, str(counts.get(group, ""))]
        cells += [f"{100 * scores[s]:.1f}" if s in scores else "" for s in systems]
        cells += [("n/a" if gaps[group].get(p) is None else f"{100 * gaps[group][p]:.0f}") for p in proxies]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(report: Report, folder: Path, command: str = "") -> None:
    """Write report.json, report.md, outputs/<system>.jsonl and (for a sweep) alpha_sweep.png."""
    folder = Path(folder)
    for name, result in report.results.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.outputs)
        write_text(folder / "outputs" / f"{name}.jsonl", lines)
    if len(report.proxies) > 1:
        plot_sweep(report, folder / "alpha_sweep.png")
    write_text(folder / "report.md", markdown(report, command))
    write_text(folder / "report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")


def plot_sweep(report: Report, path: Path) -> None:
    """Score vs alpha for the proxy, with horizontal lines for base, expert and direct (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = sorted((r.alpha, 100 * r.score) for r in report.proxies if r.alpha is not None)
    ax.plot([a for a, _ in points], [s for _, s in points], marker="o", color="C0", label="proxy-tuned")
    lines = (
        (BASE, ":", "gray", "base alone"),
        (EXPERT, "--", "C1", "expert alone"),
        (DIRECT, "-.", "C2", "directly tuned"),
    )
    for name, style, color, label in lines:
        if name in report.results:
            ax.axhline(100 * report.results[name].score, linestyle=style, color=color, label=label)
    ax.set_xlabel("alpha")
    ax.set_ylabel(f"{report.metric} (%)")
    ax.set_title(f"{report.task}: score vs alpha")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
