"""The typer application every command module registers on (``from loopexpose.cli.app import app``)."""

import typer

app = typer.Typer(
    name="loopexpose",
    help="Unsupervised exposure correction and exposure fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
