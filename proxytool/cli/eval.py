"""`proxytool eval`: base alone vs expert alone vs proxy-tuned (vs directly tuned) on a task."""

from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli import options as o
from proxytool.runtime import prepare_runtime

TASK_HELP = (
    "polls (three splits), polls-trained, polls-documents, polls-unseen, gsm8k, truthfulqa-mc, humaneval, "
    "or a JSONL file with question and "
    "answer (+ choices and correct for multiple choice)."
)


def register(app: typer.Typer) -> None:
    app.command(
        "eval", help="Score base, expert, proxy-tuned (and a directly tuned model) on a task; report gap closed."
    )(o.with_loading_options(eval_command))


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
        str, typer.Option(help="Steering weight, or a comma list to sweep, e.g. 0.25,0.5,1,2 (draws alpha_sweep.png).")
    ] = "1",
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
    loading: o.LoadingOptions = o.LoadingOptions(),
) -> None:
    import shlex
    import sys

    from rich.console import Console

    from proxytool.evaluation.evaluate import (
        EvalConfig,
        models_note,
        parse_alphas,
        prepare,
        run_prepared,
        target_note,
    )

    alphas = parse_alphas(alpha)
    setup = loading.setup(base, [expert], [anti_expert] if anti_expert else [], alphas[:1])
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
    )
    prepared = prepare(config)  # input errors surface before the progress display starts
    prepare_runtime(loading.threads)
    console = Console(stderr=True)
    with _ProgressBars(console) as bars:
        report, folder = run_prepared(prepared, on_progress=bars.update, on_status=bars.status)
    out = Console()
    out.print(_table(report))
    out.print(models_note(report), highlight=False)
    out.print(target_note(report), highlight=False)
    console.print(f"wrote {folder}/report.json, report.md and outputs/")


def _table(report):
    from rich.table import Table

    from proxytool.evaluation.evaluate import table_rows

    headers, rows = table_rows(report)
    table = Table(title=f"{report.task}: {report.metric}")
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
