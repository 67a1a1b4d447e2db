"""The ``harness`` command line. Each command is a thin shell over a core module."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from harness.errors import HarnessError
from harness.plugins import ENV_STRICT, LoadedPlugins, load_plugins


class HarnessGroup(click.Group):
    """Turns every HarnessError into its message and exit code instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HarnessError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=HarnessGroup)
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


def strict_plugins_option(command):  # type: ignore[no-untyped-def]
    """Also accept --strict-plugins after the command name (harness run --strict-plugins …)."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_root().obj["strict_plugins"] = True
        return value

    return click.option("--strict-plugins", is_flag=True, expose_value=False, callback=remember,
                        help="Fail (exit 3) if any plugin is broken.")(command)


def loaded_plugins(ctx: click.Context) -> LoadedPlugins:
    """Load plugins once per command, honouring --strict-plugins."""
    root = ctx.find_root()
    if "plugins" not in root.obj:
        root.obj["plugins"] = load_plugins(strict=root.obj["strict_plugins"] or None)
        for plugin in root.obj["plugins"].broken:
            click.echo(f"Warning: plugin {plugin.name!r} is broken: {'; '.join(plugin.errors)}", err=True)
    return root.obj["plugins"]


@cli.command()
@strict_plugins_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List every plugin, what it registered, and broken plugins with their error."""
    loaded = loaded_plugins(ctx)
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in loaded.plugins], indent=2))
        return
    for plugin in loaded.plugins:
        source = "built-in" if plugin.builtin else f"{plugin.distribution or plugin.module} {plugin.version or ''}".strip()
        status = "BROKEN" if plugin.broken else "ok"
        items = ", ".join([f"cell:{c}" for c in plugin.cells] + [f"task:{t}" for t in plugin.tasks]) or "-"
        click.echo(f"{plugin.name:<20} {status:<7} {source:<28} {items}")
        for error in plugin.errors:
            # Indent every line: pluggy's validation errors span several lines.
            for line in error.splitlines():
                click.echo(f"    {line}")


@cli.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the file, e.g. --set training.max_epochs=1 (repeatable).")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@click.pass_context
def run(ctx: click.Context, experiment_file: Path, overrides: tuple[str, ...], quiet: bool) -> None:
    """Train every cell × task × seed of EXPERIMENT_FILE, then write its report.

    Finished runs are skipped; interrupted or failed ones run again. Exit code 0 when
    every run finished, 1 when any failed, 2 for bad input, 130/143 when interrupted.
    """
    from harness.config import load_experiment

    loaded = load_experiment(experiment_file, overrides)  # before heavy imports: bad files fail fast
    from harness.runner import Runner, RunInterrupted, expand_grid

    plugins = loaded_plugins(ctx)
    specs = expand_grid(loaded, plugins)
    runner = Runner(loaded, plugins, specs, verbose=not quiet)
    started = time.perf_counter()
    try:
        runner.open()
        summary = runner.run()
    except RunInterrupted as interrupted:  # before any run was claimed
        click.echo(f"{loaded.name}: {interrupted}", err=True)
        sys.exit(interrupted.exit_code)
    elapsed = time.perf_counter() - started
    paths = _write_report(loaded, runner.tracker)
    click.echo(
        f"{loaded.name}: {summary.finished} finished, {summary.failed} failed, {summary.skipped} skipped"
        f" (already finished) in {elapsed:.0f}s"
        + (f"; interrupted by signal {summary.interrupted_by}" if summary.interrupted_by else "")
    )
    click.echo(f"report: {paths.markdown}  {paths.html}")
    click.echo(f"browse runs: mlflow ui --backend-store-uri {runner.tracker.tracking_uri}")
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
def report(experiment_file: Path, overrides: tuple[str, ...]) -> None:
    """Rebuild the report of EXPERIMENT_FILE from MLflow alone."""
    from harness.config import load_experiment
    from harness.errors import BadInputError
    from harness.tracking import Tracker, default_tracking_uri

    loaded = load_experiment(experiment_file, overrides)
    uri = loaded.experiment.tracking_uri
    if uri is None:
        if not (loaded.output_dir / "mlflow.db").exists():
            raise BadInputError(f"{experiment_file}: no runs recorded in {loaded.output_dir}; "
                                f"run `harness run {experiment_file}` first")
        uri = default_tracking_uri(loaded.output_dir)
    tracker = Tracker(uri, loaded.name, loaded.output_dir / "artifacts")
    if loaded.experiment.reference is not None:  # the file's published numbers, recorded with the runs
        tracker.set_experiment_tag("reference", loaded.experiment.reference.model_dump_json())
    paths = _write_report(loaded, tracker)
    click.echo(f"report: {paths.markdown}  {paths.html}")


@cli.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.option("--count", default=None, type=int, help="How many samples.  [default: 5; music: 1]")
@click.option("--length", default=100, show_default=True,
              help="Stop after this many tokens (or at <EOS>); music: sample this many time steps.")
@click.option("--temperature", default=1.0, show_default=True, help="< 1 sharper, > 1 flatter.")
@click.option("--prime", default=None, help="Tokens to start from, separated by spaces.")
@click.option("--reject-unk", is_flag=True, help="Never emit <UNK> (resample from the rest).")
@click.option("--seed", default=0, show_default=True)
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.option("--prime-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Music: start from the first K steps of the first test piece (reads the run's data set).")
@click.option("--output", default="sample.mid", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Music: the MIDI file to write (a piano-roll PNG goes next to it; -1, -2, … for several).")
@click.pass_context
def sample(ctx: click.Context, run_reference: str, count: int | None, length: int, temperature: float,
           prime: str | None, reject_unk: bool, seed: int, tracking_uri: str | None, prime_steps: int,
           output: Path) -> None:
    """Print samples from a trained language model, or write music samples as MIDI + PNG.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    """
    from harness.checkpoints import load_trained_run, run_directory
    from harness.generate import sample_language_model, sample_music

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    if trained.task.family == "multilabel_sequence":
        for path in sample_music(trained, count=count or 1, length=length, temperature=temperature,
                                 prime_steps=prime_steps, seed=seed, output=output, prime=prime,
                                 reject_unk=reject_unk):
            click.echo(str(path))
        return
    for line in sample_language_model(trained, count=5 if count is None else count, length=length,
                                      temperature=temperature, prime=prime, reject_unk=reject_unk, seed=seed,
                                      prime_steps=prime_steps, reference=run_reference):
        click.echo(line)


def _write_report(loaded, tracker):  # type: ignore[no-untyped-def]
    from harness.reporting import build_report

    return build_report(loaded.name, tracker, loaded.report_dir, experiment_file=str(loaded.path))


@cli.command()
@strict_plugins_option
@click.argument("cells", nargs=-1, required=True)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A cell option, e.g. reset=after.")
@click.pass_context
def conformance(ctx: click.Context, cells: tuple[str, ...], options: tuple[str, ...]) -> None:
    """Run the cell contract tests (the ones the built-ins pass) on CELLS."""
    from harness.conformance import run_conformance

    loaded = loaded_plugins(ctx)
    for name in cells:
        loaded.cells.get(name)  # unknown names: exit 2 with the installed ones listed
    sys.exit(run_conformance(list(cells), dict(_parse_assignment(o) for o in options)))


def _parse_assignment(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE")
    return key.strip(), yaml.safe_load(value)


def main() -> None:
    cli(prog_name="harness")


if __name__ == "__main__":
    main()
