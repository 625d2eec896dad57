"""`proxytool data ...`: build training and evaluation data sets."""

from pathlib import Path

import typer

DEFAULT_POLLS_CSV = Path("../shared/data/polls/538_2024_forecast_poll_list.csv")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(name="data", help="Build training and evaluation data sets.", no_args_is_help=True)
    data_app.command(
        "polls",
        help="FiveThirtyEight 2024 poll list -> train.jsonl (every fact of a poll in several phrasings), "
        "eval.jsonl with three splits (trained / documents / unseen) and ATTRIBUTION.md "
        "(the data is CC BY 4.0, ABC News / FiveThirtyEight).",
    )(polls)
    app.add_typer(data_app, name="data")


def polls(
    csv: Path | None = typer.Option(
        None,
        "--csv",
        help=f"538 poll_list.csv. Default: {DEFAULT_POLLS_CSV} (relative to the current folder), if that file exists.",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the subset, the split, the templates and the order."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Keep only this many polls (a seeded subset)."),
    documents_fraction: float = typer.Option(
        0.2, "--documents-fraction", help="Share of polls trained as documents only (split 'documents')."
    ),
    unseen_fraction: float = typer.Option(
        0.2, "--unseen-fraction", help="Share of polls held out entirely (split 'unseen')."
    ),
    phrasings: int = typer.Option(4, "--phrasings", min=1, help="Question phrasings per fact of a trained poll."),
    eval_phrasings: int = typer.Option(1, "--eval-phrasings", min=1, help="Held-out questions per fact."),
) -> None:
    from rich.console import Console
    from rich.table import Table

    from proxytool.data.poll_facts import build_polls_dataset
    from proxytool.errors import ProxyToolError

    if csv is None:
        if not DEFAULT_POLLS_CSV.is_file():
            raise ProxyToolError(
                f"no --csv given and the default {DEFAULT_POLLS_CSV} does not exist here; pass --csv PATH"
            )
        csv = DEFAULT_POLLS_CSV
    counts = build_polls_dataset(
        csv,
        out,
        seed=seed,
        limit=limit,
        documents_fraction=documents_fraction,
        unseen_fraction=unseen_fraction,
        phrasings=phrasings,
        eval_phrasings=eval_phrasings,
    )
    table = Table(title=f"polls data set in {out}")
    table.add_column("item")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    Console().print(table)
