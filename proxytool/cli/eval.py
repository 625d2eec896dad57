"""`proxytool eval`: base alone vs expert alone vs proxy-tuned (vs directly tuned) on a task."""

from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli import options as o
from proxytool.cli.output import console as stdout_console
from proxytool.errors import ProxyToolError
from proxytool.evaluation.tasks import REGISTRY as TASK_REGISTRY
from proxytool.runtime import prepare_runtime

TASK_HELP = ", ".join(f"{name} ({spec.help})" for name, spec in TASK_REGISTRY.items()) + (
    ", or a JSONL file with question and answer (+ choices and correct for multiple choice)."
)


def register(app: typer.Typer) -> None:
    app.command(
        "eval", help="Score base, expert, proxy-tuned (and a directly tuned model) on a task; report gap closed."
    )(o.with_loading_options(eval_command))


# Over 60 lines: Typer declares its 19 options in the signature; the body is the flag checks in order.
def eval_command(
    task: Annotated[str, typer.Option("--task", "-t", help=TASK_HELP)],
    base: o.Base,
    expert: Annotated[str, typer.Option("--expert", "-e", help="Expert M+ (the small tuned model).")],
    anti_expert: Annotated[
        str | None,
        typer.Option("--anti-expert", "-a", help="Anti-expert M- (default: the model the expert was tuned from)."),
    ] = None,
    direct: Annotated[
        str | None, typer.Option(help="A directly tuned large model: the target for gap closed (else the expert).")
    ] = None,
    alpha: Annotated[
        str,
        typer.Option(
            help="Steering weight, or a comma list to sweep, e.g. 0.25,0.5,1,2 (draws alpha_sweep.png), or auto "
            "(auto:0.5,1,2 for another grid): choose alpha on --dev-task, store it with the expert (alpha.json, "
            "the default of decode, chat and serve) and report the task at it."
        ),
    ] = "1",
    dev_task: Annotated[
        str | None,
        typer.Option(help="--alpha auto: the held-out task alpha is chosen on (default: the task's own, polls-dev)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N examples only.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default runs/eval/<task>-<timestamp>).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="polls: folder with eval_*.jsonl; others: the evalsets folder.")
    ] = None,
    few_shot: Annotated[int | None, typer.Option(help="Worked examples before each prompt (gsm8k only).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Override the task's generation budget.")] = None,
    batch_size: Annotated[
        int, typer.Option(help="Examples decoded together (choice tasks: all their choices in one batch).")
    ] = 8,
    allow_code_execution: Annotated[
        bool,
        typer.Option(
            "--allow-code-execution",
            help="Let humaneval run model-written code (sandboxed as far as the OS allows; see docs/eval.md).",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    import shlex
    import sys

    from rich.console import Console

    from proxytool.api.tuned import load_models
    from proxytool.decoding import checks as v
    from proxytool.evaluation.evaluate import EvalConfig, parse_alpha_option, prepare, run_prepared
    from proxytool.evaluation.report import GROUP_KEYS, models_note, target_note

    loading.validate()
    v.names("--expert", [expert])
    v.names("--anti-expert", [anti_expert] if anti_expert is not None else [])
    v.at_least("--max-new-tokens", max_new_tokens, 0, 1_000_000)
    v.at_least("--batch-size", batch_size, 1, 100_000)
    alphas, auto_alpha = parse_alpha_option(alpha)
    for value in alphas:
        v.alpha("--alpha", value)
    if dev_task is not None and not auto_alpha:
        raise ProxyToolError("--dev-task is where --alpha auto chooses alpha; it needs --alpha auto")
    setup = o.proxy_setup(loading, base, [expert], [anti_expert] if anti_expert else [], alphas[:1], batch=batch_size)
    config = EvalConfig(
        task=task,
        setup=setup,
        alphas=alphas,
        direct=direct,
        limit=limit,
        data_dir=data_dir,
        few_shot=few_shot,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        output=output,
        command=shlex.join(["proxytool", *sys.argv[1:]]),
        allow_code_execution=allow_code_execution,
        auto_alpha=auto_alpha,
        dev_task=dev_task,
    )
    v.device_available(loading.device)
    existed = output is not None and Path(output).exists()
    prepared = prepare(config)  # input errors surface before the progress display starts
    try:
        _check_prompt_lengths(prepared, loading.formats)
    except ProxyToolError:
        if not existed:  # leave no empty output folder behind
            import shutil

            shutil.rmtree(prepared.output, ignore_errors=True)
        raise
    prepare_runtime(loading.threads)
    console = Console(stderr=True)
    with _ProgressBars(console) as bars:
        report, folder = run_prepared(prepared, on_progress=bars.update, on_status=bars.status, load=load_models)
    calibration = report.meta.get("calibration")
    if calibration is not None:
        where = calibration["stored"] or "not stored: the expert is not a local folder"
        console.print(
            f"alpha {calibration['alpha']:g} chosen on {calibration['task']} ({calibration['n']} questions; {where})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if calibration["warning"]:
            console.print(calibration["warning"], markup=False, highlight=False, soft_wrap=True)
    if json_output:
        import json

        print(json.dumps({**report.to_json(), "folder": str(folder)}, ensure_ascii=False))
        return
    out = stdout_console()
    out.print(_table(report))
    for key in GROUP_KEYS:
        if report.breakdown(key):
            out.print(_breakdown_table(report, key))
    out.print(models_note(report), highlight=False)
    out.print(target_note(report), highlight=False)
    console.print(f"wrote {folder}/report.json, report.md and outputs/")


def _check_prompt_lengths(prepared, formats: dict) -> None:
    """Each example (with its longest choice, or plus the generation budget) fits every model's context."""
    from proxytool.decoding import checks as v

    task, config = prepared.task, prepared.config
    labels = {
        "base": ("the base", "base"),
        "expert": ("the expert", "expert"),
        "direct": ("the direct model", "expert"),
    }
    labels["anti_expert"] = ("the anti-expert", "anti-expert")
    roles = [(labels[k][0], spec, labels[k][1]) for k, spec in prepared.models.items() if k in labels]
    fit = v.PromptFit(roles, formats)
    budget = task.max_new_tokens if config.max_new_tokens is None else config.max_new_tokens
    for example in task.examples:
        longest = max(example.choices or [""], key=len)
        fit.check(
            f"task {task.name}: example '{example.id}'", example.prompt + longest, budget if not example.choices else 0
        )


def _breakdown_table(report, key: str):
    from proxytool.evaluation.report import BREAKDOWN_TITLES, breakdown_rows

    headers, rows = breakdown_rows(report, key)
    return _rich_table(f"{BREAKDOWN_TITLES.get(key, 'By ' + key)}: score %, gap closed %, junk %", headers, rows)


def _table(report):
    from proxytool.evaluation.report import table_rows

    headers, rows = table_rows(report)
    return _rich_table(f"{report.task}: {report.metric}", headers, rows)


def _rich_table(title: str, headers: list[str], rows: list[list[str]]):
    """A rich table: the first column left-aligned (row names), the others right-aligned (figures)."""
    from rich.table import Table

    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


class _ProgressBars:
    """One rich progress bar per system, plus a status line while models load."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks = {}
        self.loading = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def status(self, message: str) -> None:
        self._finish_loading()
        self.loading = self.progress.add_task(message, total=None)

    def update(self, system: str, done: int, total: int) -> None:
        self._finish_loading()
        if system not in self.tasks:
            self.tasks[system] = self.progress.add_task(system, total=total)
        self.progress.update(self.tasks[system], completed=done, total=total)

    def _finish_loading(self) -> None:
        if self.loading is not None:
            self.progress.remove_task(self.loading)
            self.loading = None
