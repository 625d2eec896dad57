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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch

from proxytool.decoding import scoring
from proxytool.decoding.generate import ProxyModels, complete
from proxytool.decoding.setup import ProxySetup, ResolvedSetup, load_proxy_models, resolve_roles
from proxytool.errors import ProxyToolError
from proxytool.evaluation import calibrate, metrics
from proxytool.evaluation.report import (
    BASE,
    DIRECT,
    EXPERT,
    GROUP_KEYS,
    Report,
    SystemResult,
    is_proxy,
    proxy_name,
    write_report,
)
from proxytool.evaluation.tasks import Example, Task, load_task
from proxytool.models.loading import pick_device, pick_dtype
from proxytool.models.registry import ModelSpec, resolve

DEFAULT_BATCH_SIZE = 8
DEFAULT_OUTPUT_ROOT = Path("runs/eval")

SystemFn = Callable[[Task, list[Example]], list]
"""A system as a function: ``(task, examples) -> outputs``, one per example: the completion text for
generate tasks, the list of per-choice log-likelihoods for choice tasks."""
ProgressFn = Callable[[str, int, int], None]
"""``(system, examples_done, examples_total)``, called when a system starts and after each batch."""
LoadFn = Callable[[ProxySetup | ResolvedSetup], ProxyModels]
"""How a setup's models load: the engine's :func:`load_proxy_models` by default; the CLI passes the
public API's (``proxytool.api.tuned.load_models``: ``ProxyTuned.from_setup``), which this layer cannot import."""


def metric_name(task: Task) -> str:
    """What the task's score means (the task says)."""
    return task.metric


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


def parse_alpha_option(text: str) -> tuple[list[float], bool]:
    """``--alpha``: a number, a comma list (a sweep), ``auto`` (choose α on a dev task from
    :data:`calibrate.AUTO_GRID`) or ``auto:A,B,...`` (from that grid). Returns (alphas, auto)."""
    head, colon, grid = str(text).strip().partition(":")
    if head.strip().lower() != "auto":
        return parse_alphas(text), False
    if colon and not grid.strip():
        raise ProxyToolError("--alpha auto: give the grid after the colon (auto:0.5,1,2) or write just auto")
    return (parse_alphas(grid) if colon else list(calibrate.AUTO_GRID)), True


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
    return {BASE: proxy.with_base(proxy.base), EXPERT: proxy.with_base(proxy.pairs[0].expert)}


def with_alpha(proxy: ProxyModels, alpha: float) -> ProxyModels:
    """The same loaded models steering with ``alpha`` (a copy: ``proxy`` is left as it was)."""
    return proxy.with_alphas([alpha] * len(proxy.pairs))


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
    """Teacher-forced log-likelihood of each (prompt, continuation) row under the system's distribution."""
    return [sum(row) for row in scoring.continuation_logprobs(models, prompts, continuations)]


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
        record["junk"] = metrics.junk_in(output, example.meta.get("question") or example.prompt, example.answer)
    return record


def aggregate(task: Task, scores: list[float]) -> float:
    """The task's score from per-example scores (the task's own aggregation: mean, pass@1, ...)."""
    return task.aggregate(scores)


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
        allow_code_execution: Let code-running tasks (humaneval) execute model-written code in
            :mod:`proxytool.evaluation.sandbox`; off by default (the lm-eval convention).
        auto_alpha: Choose α among ``alphas`` on ``dev_task`` first (:mod:`.calibrate`), store it
            with the expert, and report the task at that α.
        dev_task: The held-out task α is chosen on (default: the task's own, e.g. ``polls-dev``).
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
    allow_code_execution: bool = False
    auto_alpha: bool = False
    dev_task: str | None = None


@dataclass
class Prepared:
    """A checked config: the task loaded, model names resolved, the output folder created."""

    config: EvalConfig
    task: Task
    output: Path
    models: dict
    resolved: ResolvedSetup
    dev: Task | None = None  # where α is chosen (--alpha auto)


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
    if config.limit is not None and config.limit < 1:
        raise ProxyToolError(f"--limit must be >= 1 (got {config.limit})")
    if config.few_shot is not None and config.few_shot < 0:
        raise ProxyToolError(f"--few-shot must be >= 0 (got {config.few_shot})")
    task = load_task(config.task, limit=config.limit, data_dir=config.data_dir, few_shot=config.few_shot)
    if task.runs_code and not config.allow_code_execution:
        raise ProxyToolError(
            f"task {task.name} runs model-written code on this machine; pass --allow-code-execution to allow it "
            "(see docs/eval.md for what the sandbox does and does not protect)"
        )
    if not task.examples:
        raise ProxyToolError(f"task {task.name}: no examples to evaluate (--limit {config.limit})")
    dev = _dev_task(config, task) if config.auto_alpha else None
    resolved = resolve_roles(replace(config.setup, alphas=[config.alphas[0]]))
    [(_, expert, anti)] = resolved.pairs
    models = {BASE: resolved.base, EXPERT: expert, "anti_expert": anti}
    if config.direct is not None:
        models[DIRECT] = resolve(config.direct)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(config.output) if config.output is not None else DEFAULT_OUTPUT_ROOT / f"{task.name}-{stamp}"
    try:
        (output / "outputs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProxyToolError(f"--output {output}: cannot create the folder ({err.strerror or err})") from None
    return Prepared(config, task, output, models, resolved, dev)


def _dev_task(config: EvalConfig, task: Task) -> Task:
    """The held-out task ``--alpha auto`` chooses α on: no question of it may be one the report scores."""
    name = config.dev_task or calibrate.DEV_TASKS.get(task.name)
    if name is None:
        raise ProxyToolError(
            f"--alpha auto needs held-out questions to choose alpha on: pass --dev-task (a task name or a "
            f"JSONL file); {task.name} has no dev split of its own"
        )
    dev = load_task(name, data_dir=config.data_dir, few_shot=config.few_shot)
    if dev.kind != task.kind:
        raise ProxyToolError(f"--dev-task {name} is a {dev.kind} task; {task.name} is a {task.kind} task")
    if not dev.examples:
        raise ProxyToolError(f"--dev-task {name}: no examples")
    shared = {e.prompt for e in task.examples} & {e.prompt for e in dev.examples}
    if shared:
        raise ProxyToolError(
            f"--dev-task {name} shares {len(shared)} questions with {task.name}: alpha must be chosen on other "
            "questions than those reported"
        )
    return dev


def run_prepared(
    prep: Prepared,
    on_progress: ProgressFn | None = None,
    on_status: Callable[[str], None] | None = None,
    load: LoadFn = load_proxy_models,
) -> tuple[Report, Path]:
    """Load the models once, run every system, write the report files; returns the report and its folder.

    ``prep`` comes from :func:`prepare`, so input errors are reported before anything loads. Base
    alone, expert alone and the proxy at each alpha share one set of loaded models; the direct model
    (if any) is loaded after those are released, so peak memory is the larger of the two. ``load``
    loads both (see :data:`LoadFn`).
    """
    config, status = prep.config, on_status or (lambda _: None)
    task, started = prep.task, datetime.now().astimezone().isoformat(timespec="seconds")
    status("loading base, expert and anti-expert")
    proxy = load(prep.resolved)
    alphas, calibration = config.alphas, None
    if prep.dev is not None:
        calibration = _calibrate(prep, proxy, on_progress)
        alphas = [calibration["alpha"]]
    report = evaluate(
        task,
        _proxy_systems(proxy, alphas),
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        on_progress=on_progress,
    )
    if config.direct is not None:
        gc.collect()  # the proxy's models are unreferenced now: free them before the direct model loads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        status(f"loading the directly tuned model {config.direct}")
        direct = load(direct_setup(config))
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
    if calibration is not None:
        report.meta["alphas"] = alphas
        report.meta["calibration"] = calibration
    write_report(report, prep.output, config.command)
    return report, prep.output


def _calibrate(prep: Prepared, proxy: ProxyModels, on_progress: ProgressFn | None) -> dict:
    """Sweep α on the dev task (base alone and the proxy at each α), choose, store it with the expert.

    The dev report is written to ``<output>/dev/``. Returns the calibration record plus where it was
    stored (``stored``, None for an expert that is not a local folder) and the one-line ``warning``
    (None when steering beats the base alone)."""
    config = prep.config
    systems = {BASE: derived_systems(proxy)[BASE]}
    for alpha in config.alphas:
        systems[proxy_name(alpha, True)] = with_alpha(proxy, alpha)
    dev = evaluate(
        prep.dev,
        systems,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        on_progress=(lambda name, done, total: on_progress(f"dev {name}", done, total)) if on_progress else None,
    )
    write_report(dev, prep.output / "dev", config.command)
    choice = calibrate.choose_alpha(dev)
    [(_, expert, anti)] = prep.resolved.pairs
    data = calibrate.record(choice, dev, prep.resolved.base, anti, proxy.plausible, config.command)
    stored = calibrate.store(expert, data)
    return {**data, "stored": None if stored is None else str(stored), "warning": calibrate.warning(choice, dev.task)}


def _proxy_systems(proxy: ProxyModels, alphas: list[float]) -> dict[str, ProxyModels]:
    systems = derived_systems(proxy)
    for alpha in alphas:
        systems[proxy_name(alpha, len(alphas) > 1)] = with_alpha(proxy, alpha)
    return systems


def direct_setup(config: EvalConfig) -> ProxySetup:
    """How the direct model loads: alone, with the run's loading options and the expert's prompt format."""
    loading = config.setup.loading
    return ProxySetup(base=config.direct, loading=replace(loading, base_format=loading.expert_format))


def _describe(spec: ModelSpec) -> dict:
    return {"name": spec.name, "source": spec.source, "kind": spec.kind, "revision": spec.revision}


def _meta(prep: Prepared, started: str) -> dict:
    from importlib.metadata import version

    import transformers

    c, task = prep.config, prep.task
    loading = c.setup.loading
    device = pick_device(loading.device)
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
            **loading.to_json(),
            "formats": loading.formats,
            "resolved_device": device,
            "resolved_dtype": str(pick_dtype(loading.dtype, device)).removeprefix("torch."),
        },
        "command": c.command,
        "started_at": started,
        "versions": {
            "proxytool": version("proxytool"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
