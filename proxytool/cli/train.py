"""`proxytool train`, `proxytool merge` and `proxytool recipes list|show`.

Every option defaults to None ("not given") so the precedence is exact:
dataclass default < recipe YAML < explicit flag.
"""

from pathlib import Path
from typing import Annotated

import typer

from proxytool.cli.output import console as stdout_console
from proxytool.training.config import DEFAULT_MODEL, TrainConfig

_D = TrainConfig()  # help texts quote the dataclass defaults, the single source of them

RecipeOpt = Annotated[
    str | None,
    typer.Option("--recipe", "-r", help="Recipe: a bundled name (see `proxytool recipes list`) or a YAML path."),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Training JSONL: text, messages, prompt+completion or question+answer lines."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model to tune: registry name, local folder, GGUF file or hub id "
        f"(default: {DEFAULT_MODEL}, the offline 0.5B pack, when installed).",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Output folder (default: runs/<name>, else runs/<data file stem>-expert)."),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Register the trained adapter under this name.")]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help=f"Passes over the data (default: {_D.epochs:g}).")]
MaxStepsOpt = Annotated[
    int | None,
    typer.Option("--max-steps", help="Optimizer steps; overrides --epochs (0 = no limit, e.g. to undo a recipe's)."),
]
LrOpt = Annotated[float | None, typer.Option("--lr", help=f"Peak learning rate (default: {_D.lr:g}).")]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size", help=f"Sequences per forward pass, per process under a launcher (default: {_D.batch_size})."
    ),
]
AccumOpt = Annotated[
    int | None, typer.Option("--grad-accum", help=f"Forward passes per optimizer step (default: {_D.grad_accum}).")
]
SeqOpt = Annotated[
    int | None, typer.Option("--max-seq-len", help=f"Tokens per sequence; longer is cut (default: {_D.max_seq_len}).")
]
RankOpt = Annotated[int | None, typer.Option("--lora-r", help=f"LoRA rank (default: {_D.lora_r}).")]
AlphaOpt = Annotated[
    int | None, typer.Option("--lora-alpha", help=f"LoRA alpha; scale = alpha / r (default: {_D.lora_alpha}).")
]
DropoutOpt = Annotated[
    float | None, typer.Option("--lora-dropout", help=f"LoRA dropout (default: {_D.lora_dropout:g}).")
]
TargetsOpt = Annotated[
    str | None,
    typer.Option(
        "--target-modules",
        help=f"Comma-separated module names to adapt, or all-linear (default: {','.join(_D.target_modules)}).",
    ),
]
PackingOpt = Annotated[
    bool | None,
    typer.Option(
        "--packing/--no-packing", help="Pack several examples per sequence, no cross-example attention (default: off)."
    ),
]
EvalOpt = Annotated[Path | None, typer.Option("--eval-data", help="Evaluation JSONL; its loss is logged.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help=f"Seed for LoRA init and data order (default: {_D.seed}).")]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the run in --output from its last checkpoint (its saved config is reused)."
    ),
]
QloraOpt = Annotated[
    bool | None, typer.Option("--qlora/--no-qlora", help="Train on a 4-bit NF4 base; needs CUDA (default: off).")
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads for torch (default: torch's choice).")]


def register(app: typer.Typer) -> None:
    app.command("train", help="Fine-tune a LoRA expert (TRL SFTTrainer + PEFT) on a JSONL file.")(train_command)
    app.command("merge", help="Merge a LoRA adapter into its base: a standalone model folder.")(merge_command)
    recipes_app = typer.Typer(name="recipes", help="Bundled training recipes.", no_args_is_help=True)
    recipes_app.command("list", help="List the bundled recipes.")(recipes_list)
    recipes_app.command("show", help="Show a recipe's resolved config and how to run it.")(recipes_show)
    app.add_typer(recipes_app, name="recipes")


# Over 60 lines: Typer declares its options in the signature; the body is 40 lines.
def train_command(
    data: DataOpt = None,
    model: ModelOpt = None,
    recipe: RecipeOpt = None,
    output: OutputOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = None,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    grad_accum: AccumOpt = None,
    max_seq_len: SeqOpt = None,
    lora_r: RankOpt = None,
    lora_alpha: AlphaOpt = None,
    lora_dropout: DropoutOpt = None,
    target_modules: TargetsOpt = None,
    packing: PackingOpt = None,
    eval_data: EvalOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    qlora: QloraOpt = None,
    threads: ThreadsOpt = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow pickled .bin base weights (they can run code when loaded).")
    ] = False,
) -> None:
    from rich.console import Console

    from proxytool.models.loading import set_trust_pickle
    from proxytool.training.recipes import load_recipe
    from proxytool.training.train import TrainingInterrupted, resolve_config, train

    _quiet()
    set_trust_pickle(trust_pickle)
    flags = {
        "data": data,
        "model": model,
        "output": output,
        "name": name,
        "epochs": epochs,
        "max_steps": max_steps,
        "lr": lr,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "max_seq_len": max_seq_len,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": _split(target_modules),
        "packing": packing,
        "eval_data": eval_data,
        "seed": seed,
        "qlora": qlora,
        "threads": threads,
    }
    loaded = load_recipe(recipe) if recipe else None
    config, sources = resolve_config(
        loaded.values if loaded else None, flags, recipe_where=str(loaded.path) if loaded else "recipe", resume=resume
    )
    console = Console(stderr=True)
    try:
        result = train(config, resume=resume, progress=RichTrainProgress(console), recipe=loaded, sources=sources)
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{stop}[/yellow]")
        raise typer.Exit(130) from None
    if result.main and not result.already_trained:  # under a launcher, rank 0 alone reports
        _print_result(stdout_console(), result, config)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _quiet() -> None:
    """Library warnings and bars would interleave with the progress display."""
    import logging

    from transformers.utils import logging as hf_logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "optional CPU kernel missing" on import
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class RichTrainProgress:
    """A rich progress bar for :func:`proxytool.training.train.train`: step, loss, tokens/s, elapsed and ETA."""

    def __init__(self, console):
        self.console = console
        self._progress = None
        self._task = None

    def start(self, total_steps: int, first_step: int, info: dict) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console.print(
            f"{info['examples']:,} examples, {info['tokens']:,} tokens "
            f"({info['trained_tokens']:,} trained on)" + (f"; resuming at step {first_step}" if first_step else "")
        )
        if info.get("processes", 1) > 1:
            self.console.print(
                f"{info['processes']} processes ({info['backend']}), global batch {info['global_batch']} "
                "(--batch-size per process × processes × --grad-accum)"
            )
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=first_step, loss="-", tps="-")
        self._progress.start()

    def step(self, step: int, stats: dict) -> None:
        if self._progress is None:
            return
        loss = f"{stats['loss']:.4f}" if stats.get("loss") is not None else "-"
        self._progress.update(self._task, completed=step, loss=loss, tps=f"{stats.get('tokens_per_s', 0):,.0f}")

    def note(self, message: str) -> None:
        self.console.print(message)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _print_result(console, result, config) -> None:
    from rich.table import Table

    table = Table(title=f"adapter saved in {result.output}", show_header=False)
    table.add_row("model", str(config.model))
    table.add_row("steps", str(result.global_step))
    table.add_row("processes", str(result.processes["processes"]))
    table.add_row("global batch", str(result.processes["global_batch"]))
    for key in ("first_loss", "last_loss", "train_loss", "eval_loss"):
        if result.metrics.get(key) is not None:
            table.add_row(key.replace("_", " "), f"{result.metrics[key]:.4f}")
    if config.name:
        table.add_row("registered as", config.name)
    console.print(table)
    expert = config.name or result.output
    console.print(f"the expert is in {result.output}", highlight=False)
    console.print(
        f"chat with it: proxytool chat --base {suggested_base(config.model)} --expert {expert}",
        highlight=False,
    )
    console.print(f"or merge it:  proxytool merge {result.output}", highlight=False)


SUGGESTED_BASES = {
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-1.5b-instruct",
    "distilgpt2": "gpt2-large",
    "gpt2": "gpt2-large",
    "smollm2-135m-instruct": "qwen2.5-coder-1.5b-instruct",  # another tokenizer: steered across tokenizers
}
"""Trained model -> a larger model to proxy-tune (printed after training; any tokenizer works)."""


def suggested_base(model: str | None) -> str:
    """The base to name in the printed ``chat`` command (``<bigger model>`` when none is known)."""
    from pathlib import Path as _Path

    name = _Path(str(model)).name if model else ""
    return SUGGESTED_BASES.get(str(model), SUGGESTED_BASES.get(name, "<bigger model>"))


def merge_command(
    checkpoint: Annotated[str, typer.Argument(help="Adapter folder (or its registry name).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Target folder (default: <checkpoint>-merged).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto (the base's saved dtype), float32, float16 or bfloat16.")] = "auto",
) -> None:

    from proxytool.training.merge import merge

    _quiet()
    result = merge(checkpoint, output, dtype=dtype)
    verb = "already up to date" if result.skipped else "written"
    stdout_console().print(f"merged model ({result.dtype}) {verb}: {result.output}")


def recipes_list() -> None:
    from rich.table import Table

    from proxytool.training.recipes import list_recipes, recipes_dir

    table = Table(title=f"recipes in {recipes_dir()}")
    for column in ("name", "model", "data", "description"):
        table.add_column(column)
    for recipe in list_recipes():
        table.add_row(
            recipe.name, str(recipe.values.get("model", "")), str(recipe.values.get("data", "")), recipe.description
        )
    stdout_console().print(table)


def recipes_show(name: Annotated[str, typer.Argument(help="Recipe name or YAML path.")]) -> None:
    from rich.table import Table

    from proxytool.training.config import TrainConfig, build_config
    from proxytool.training.recipes import load_recipe

    recipe = load_recipe(name)
    config, sources = build_config(TrainConfig, ("recipe", recipe.values))
    console = stdout_console()
    console.print(f"[bold]{recipe.name}[/bold]  ({recipe.path})\n{recipe.description}")
    if recipe.needs:
        console.print(f"needs: {recipe.needs}")
    if recipe.command:
        console.print(f"run:   {recipe.command}")
    table = Table(show_header=True)
    for column in ("key", "value", "from"):
        table.add_column(column)
    for key, source in sources.items():
        table.add_row(key, repr(getattr(config, key)), source)
    console.print(table)
