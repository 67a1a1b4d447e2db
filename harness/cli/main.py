"""The ``harness`` command line: the group and its commands, each defined beside its helpers in
:mod:`harness.cli` and kept thin over the package that does the work."""

from __future__ import annotations

import sys

import click

from harness.cli.common import loaded_plugins
from harness.cli.data import data
from harness.cli.grid import run, tune, worker
from harness.cli.plugins import conformance, plugins_command, register_plugin_commands
from harness.cli.reports import compare, export, report
from harness.cli.status import (
    status,  # a light module: `harness status` must answer fast
)
from harness.cli.trained import evaluate, sample, score, translate
from harness.core.errors import HarnessError
from harness.core.loading import ENV_STRICT


class HarnessGroup(click.Group):
    """Turns every HarnessError into its message and exit code instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HarnessError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--strict-plugins",
    is_flag=True,
    envvar=ENV_STRICT,
    help=f"Fail (exit 3) if any plugin is broken. Also ${ENV_STRICT}=1.",
)
@click.version_option(package_name="rnn-harness")
@click.pass_context
def cli(ctx: click.Context, strict_plugins: bool) -> None:
    """Benchmark recurrent cells (RNN, GRUs, LSTMs) on sequence tasks."""
    ctx.obj = {"strict_plugins": strict_plugins}


for command in (run, tune, worker, report, compare, export, status, sample, score, evaluate, translate, data,
                plugins_command, conformance):
    cli.add_command(command)
register_plugin_commands(cli, loaded_plugins)  # harness cells / harness tasks [show NAME]


def main() -> None:
    cli(prog_name="harness")


if __name__ == "__main__":
    main()
