"""The ``harness`` command line. Each command is a thin shell over a core module."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from harness.data_cli import data as data_command
from harness.errors import HarnessError
from harness.plugin_cli import register_plugin_commands
from harness.plugins import ENV_STRICT, LoadedPlugins, load_plugins


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
    """List every plugin, what it registered, and broken plugins with their error.

    Prints to stdout; writes no files. `harness cells` and `harness tasks` describe what they registered.
    """
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


def storage_option(command):  # type: ignore[no-untyped-def]
    """``--storage URL`` (or $HARNESS_STORAGE): where the run ledger lives, overriding the file's ``storage``."""
    from harness.storage import STORAGE_ENV

    return click.option(
        "--storage", "storage_url", default=None, metavar="URL", envvar=STORAGE_ENV,
        help="Ledger storage, overriding the file's `storage`: sqlite:///path.db (one process), "
             "journal:///abs/path/ledger.journal (several processes, one machine), "
             f"postgresql://user:password@host:5432/db (many machines). Also ${STORAGE_ENV}.",
    )(command)


def lease_option(command):  # type: ignore[no-untyped-def]
    """``--lease-seconds`` (or $HARNESS_LEASE_SECONDS): how long a claimed run survives its worker's silence."""
    from harness.ledger import DEFAULT_LEASE_SECONDS, LEASE_ENV

    return click.option(
        "--lease-seconds", default=DEFAULT_LEASE_SECONDS, show_default=True, envvar=LEASE_ENV,
        type=click.FloatRange(min=1.0),
        help="A run whose worker sent no heartbeat for this long (killed, machine lost) goes to another "
             f"worker; heartbeats come every sixth of it. Also ${LEASE_ENV}.",
    )(command)


def executor_options(command):  # type: ignore[no-untyped-def]
    """``--executor local|ray`` and ``--ray-address ADDRESS`` (or $RAY_ADDRESS)."""
    command = click.option(
        "--ray-address", default=None, metavar="ADDRESS", envvar="RAY_ADDRESS",
        help="The Ray cluster to train on (host:6379, or ray://host:10001 for Ray Client); left out: a Ray "
             "instance started on this machine. Also $RAY_ADDRESS. Needs --executor ray (or executor: ray).",
    )(command)
    return click.option(
        "--executor", type=click.Choice(["local", "ray"]), default=None,
        help="Who trains the runs, overriding the file's `executor`: local (this process, the default) or "
             'ray (one Ray task per run with the file\'s `resources`; pip install "rnn-harness[ray]").',
    )(command)


def _from_command_line(ctx: click.Context, name: str, value: str | None) -> str | None:
    """The value if it was typed on the command line (not taken from the environment)."""
    return value if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE else None


@cli.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the file, e.g. --set training.max_epochs=1 (repeatable).")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@storage_option
@click.option("--no-wait", is_flag=True,
              help="Do not wait for runs that other workers hold; report what has finished so far.")
@lease_option
@click.option("--no-resume", is_flag=True,
              help="Start interrupted runs afresh instead of from their last checkpoint (deletes it).")
@executor_options
@click.pass_context
def run(ctx: click.Context, experiment_file: Path, overrides: tuple[str, ...], quiet: bool,
        storage_url: str | None, no_wait: bool, lease_seconds: float, no_resume: bool,
        executor: str | None, ray_address: str | None) -> None:
    """Train every cell × task × seed of EXPERIMENT_FILE, then write its report.

    Finished runs are skipped; interrupted or failed ones run again. With shared storage,
    `harness worker` processes (any machine) take runs too, and this command waits until
    every run has finished or failed before writing the report. Exit code 0 when every
    run finished, 1 when any failed, 2 for bad input, 130/143 when interrupted.

    Outputs: the run ledger, the MLflow store (mlflow.db) and each run's artifacts (model.pt,
    network.json, config.json) under the file's output_dir (default runs/<name>/); the report
    (results.csv, report.md, index.html, plots/) under <reports_dir>/<name>/ (default reports/<name>/).
    """
    from harness.config import load_experiment
    from harness.executors import choose_executor, make_runner
    from harness.storage import experiment_storage

    loaded = load_experiment(experiment_file, overrides)  # before heavy imports: bad files fail fast
    loaded = choose_executor(loaded, executor, _from_command_line(ctx, "ray_address", ray_address))
    storage = experiment_storage(loaded, storage_url)
    from harness.runner import RunInterrupted, expand_grid

    plugins = loaded_plugins(ctx)
    specs = expand_grid(loaded, plugins)
    runner = make_runner(loaded, plugins, specs, ray_address=ray_address, verbose=not quiet, storage=storage,
                         lease_seconds=lease_seconds, resume=not no_resume)
    started = time.perf_counter()
    try:
        runner.open()
        summary = runner.run(wait=not no_wait)
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
    if storage.shared_by_processes:
        click.echo(f"grid ({storage.describe()}): {summary.describe_grid()}")
    click.echo(f"report: {paths.markdown}  {paths.html}")
    click.echo(f"browse runs: mlflow ui --backend-store-uri {runner.tracker.tracking_uri}")
    sys.exit(summary.exit_code)


@cli.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@storage_option
@lease_option
@click.pass_context
def tune(ctx: click.Context, experiment_file: Path, overrides: tuple[str, ...], quiet: bool,
         storage_url: str | None, lease_seconds: float) -> None:
    """Search each cell × task of EXPERIMENT_FILE with Optuna, re-train the best over the seeds, report.

    Every (cell, task) study gets the same budget, the file's tuning.trials trials of at most
    training.max_epochs epochs; running the command again continues each study to that total
    (a trial cut short by a signal or a dead worker runs again). Exit code 0 when every study
    has a completed trial and every re-training run finished, 1 otherwise, 2 for bad input,
    130/143 when interrupted.

    Outputs: as for `harness run` (runs/<name>/ and reports/<name>/ by default), plus the Optuna
    studies in the ledger's storage; the report gains each study's trials and importances.
    """
    from harness.config import load_experiment

    loaded = load_experiment(experiment_file, overrides)  # before heavy imports: bad files fail fast
    from harness.tracking import Tracker
    from harness.tuning import tune as tune_experiment

    started = time.perf_counter()
    summary = tune_experiment(loaded, loaded_plugins(ctx), storage=storage_url, lease_seconds=lease_seconds,
                              verbose=not quiet)
    elapsed = time.perf_counter() - started
    if summary.interrupted_by is not None:
        click.echo(f"{loaded.name}: interrupted by signal {summary.interrupted_by} after {elapsed:.0f}s; "
                   f"run `harness tune {experiment_file}` again to continue", err=True)
        sys.exit(summary.exit_code)
    for study in summary.studies:
        best = "no completed trial" if study.best_value is None else \
            f"best {study.plan.monitor} {study.best_value:.4g} (trial {study.best_number})"
        counts = ", ".join(f"{n} {state.lower()}" for state, n in study.counts.items())
        click.echo(f"{study.plan.name}: {counts} of {study.budget} trials; {best}")
    retrain = summary.retrain
    click.echo(f"{loaded.name}: re-training {retrain.finished} finished, {retrain.failed} failed, "
               f"{retrain.skipped} skipped (already finished); {elapsed:.0f}s in all")
    paths = _write_report(loaded, Tracker(summary.tracking_uri, loaded.name, loaded.output_dir / "artifacts"),
                          storage_url)
    click.echo(f"report: {paths.markdown}  {paths.html}")
    sys.exit(summary.exit_code)


@cli.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option("--gpus", default=None, metavar="IDS",
              help="One worker per GPU, pinned with CUDA_VISIBLE_DEVICES: 0,1 or all.  "
                   "[default: all when several GPUs are visible]")
@click.option("--runs-per-gpu", default=1, show_default=True, type=click.IntRange(min=1),
              help="Workers per GPU, for models too small to fill one.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes without GPU pinning (CPU machines).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@lease_option
@click.option("--slot", default=None, hidden=True)  # set by a parent worker for its children
@click.pass_context
def worker(ctx: click.Context, experiment_file: Path, storage_url: str | None, gpus: str | None,
           runs_per_gpu: int, processes: int, overrides: tuple[str, ...], quiet: bool, lease_seconds: float,
           slot: str | None) -> None:
    """Claim and execute runs of EXPERIMENT_FILE from shared storage until every run has ended.

    Start workers on any number of processes and machines against one --storage (a journal
    file on one machine, PostgreSQL across machines): each run executes exactly once. A
    worker killed with SIGKILL loses its run to the others when its lease expires
    (--lease-seconds); SIGTERM/Ctrl-C end its run KILLED and release it.
    `harness run` or `harness report` writes the report. Exit code 0, 1 when a run of the
    grid failed, 2 for bad input, 130/143 when interrupted.

    Outputs: each run's MLflow record and artifacts under the file's output_dir (default
    runs/<name>/) or its tracking_uri; run states in the --storage ledger. No report.
    """
    from harness.config import load_experiment
    from harness.storage import experiment_storage
    from harness.worker import run_worker

    loaded = load_experiment(experiment_file, overrides)
    storage = experiment_storage(loaded, storage_url)
    sys.exit(run_worker(loaded, storage, lambda: loaded_plugins(ctx), gpus=gpus, runs_per_gpu=runs_per_gpu,
                        processes=processes, slot=slot, quiet=quiet, lease_seconds=lease_seconds,
                        strict_plugins=ctx.find_root().obj["strict_plugins"],
                        say=lambda message: click.echo(message, err=True)))


@cli.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@storage_option
def report(experiment_file: Path, overrides: tuple[str, ...], storage_url: str | None) -> None:
    """Rebuild the report of EXPERIMENT_FILE from MLflow alone (while workers run, too).

    With --storage (or a `storage` in the file), also print how many runs of the ledger
    are in each state.

    Outputs: results.csv, report.md, index.html and plots/ under <reports_dir>/<name>/
    (default reports/<name>/), overwriting the previous report; reads runs/<name>/mlflow.db.
    """
    from harness.config import load_experiment
    from harness.results import open_tracker

    loaded = load_experiment(experiment_file, overrides)
    if storage_url is not None or loaded.experiment.storage is not None:
        click.echo(_ledger_counts(loaded, storage_url))
    tracker = open_tracker(loaded)
    if loaded.experiment.reference is not None:  # the file's published numbers, recorded with the runs
        tracker.set_experiment_tag("reference", loaded.experiment.reference.model_dump_json())
    paths = _write_report(loaded, tracker, storage_url)
    click.echo(f"report: {paths.markdown}  {paths.html}")


@cli.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.option("--count", default=None, type=int, help="How many samples.  [default: 5; music: 1]")
@click.option("--length", default=100, show_default=True,
              help="Stop after this many tokens (or at <EOS>); music: sample this many time steps.")
@click.option("--temperature", default=1.0, show_default=True, help="< 1 sharper, > 1 flatter.")
@click.option("--prime", default=None,
              help="Text to start from, tokenized by the run's task (words; characters for a character model).")
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
    Outputs: text samples go to stdout; music goes to --output (default ./sample.mid) with a
    piano-roll PNG beside it.
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
    samples = sample_language_model(trained, count=5 if count is None else count, length=length,
                                    temperature=temperature, prime=prime, reject_unk=reject_unk, seed=seed,
                                    prime_steps=prime_steps, reference=run_reference)
    multiline = any("\n" in text for text in samples)  # character models: a sample spans lines
    for index, text in enumerate(samples):
        if multiline:
            click.echo(f"----- sample {index + 1} -----")
        click.echo(text)


@cli.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.argument("sentences", nargs=-1, required=True)
@click.option("--per-token", is_flag=True, help="Also print log P of each token given the ones before it.")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def score(ctx: click.Context, run_reference: str, sentences: tuple[str, ...], per_token: bool,
          tracking_uri: str | None) -> None:
    """Print log P(sentence) under a trained language model, for each SENTENCE.

    log P(y<1>, …, y<T>) is the sum of log P(y<t> | y<1>, …, y<t-1>), read from the zero state
    after the model's start context (<BOS> for sentence models, <EOS> for word streams, a newline
    for character streams), with the end of the sentence (<EOS>) included when the model has one.
    Printed in nats and as log10; words outside the vocabulary are scored as <UNK> and flagged.
    Prints to stdout; writes no files.
    """
    from harness.checkpoints import load_trained_run, run_directory
    from harness.generate import score_language_model

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    for sentence, scored in zip(sentences, score_language_model(trained, list(sentences), reference=run_reference)):
        flagged = f"  [scored as <UNK>: {', '.join(scored.unknown)}]" if scored.unknown else ""
        click.echo(f"{scored.log_prob:.4f} nats  log10 {scored.log10_prob:.4f}  "
                   f"({len(scored.tokens)} tokens)  {sentence}{flagged}")
        if per_token:
            for token in scored.tokens:
                shown = f"{token.token!r} as {token.scored_as}" if token.unknown else repr(token.token)
                click.echo(f"    {token.log_prob:10.4f}  {shown}")


@cli.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True,
              help="Which split of the task's data to score.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a task option of the run, e.g. --set data_dir=/data (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def evaluate(ctx: click.Context, run_reference: str, split: str, overrides: tuple[str, ...], as_json: bool,
             tracking_uri: str | None) -> None:
    """Score a finished run's saved network on a split of its task's data.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    The task is loaded again with the run's recorded options (plus --set); if its rebuilt
    vocabularies differ from the saved ones the command refuses (exit 2) and shows both hashes.
    Prints to stdout (--json for JSON); writes no files.
    """
    from harness.checkpoints import run_directory
    from harness.evaluation import evaluate_run, format_evaluation

    changes = dict(_parse_assignment(o) for o in overrides)
    evaluation = evaluate_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx), split=split,
                              overrides=changes)
    if as_json:
        click.echo(json.dumps(evaluation.as_dict(), indent=2))
        return
    for line in format_evaluation(evaluation):
        click.echo(line)


@cli.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.argument("sentences", nargs=-1)
@click.option("--beam", "beam_size", default=None, type=click.IntRange(min=1),
              help="Beam size K (1: greedy).  [default: the run's task setting]")
@click.option("--max-length", default=None, type=click.IntRange(min=1),
              help="Most tokens per translation, <EOS> included.  [default: the run's task setting, else 100]")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def translate(ctx: click.Context, run_reference: str, sentences: tuple[str, ...], beam_size: int | None,
              max_length: int | None, tracking_uri: str | None) -> None:
    """Translate SENTENCES (or one per line of stdin) with a trained seq2seq run; prints one line each.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    Translations go to stdout, notes about unknown words to stderr; writes no files.
    """
    from harness.checkpoints import load_trained_run, run_directory
    from harness.decoding import translate as translate_sentences

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    texts = list(sentences) or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise click.UsageError("give sentences to translate, as arguments or on stdin")
    for translation in translate_sentences(trained, texts, beam_size=beam_size, max_length=max_length):
        if translation.unknown:
            click.echo(f"note: not in the source vocabulary (read as <UNK>): {' '.join(translation.unknown)}",
                       err=True)
        click.echo(translation.text)


def _ledger_counts(loaded, storage_url):  # type: ignore[no-untyped-def]
    from harness.ledger import open_ledger
    from harness.storage import experiment_storage

    storage = experiment_storage(loaded, storage_url)
    ledger = open_ledger(storage)
    try:
        counts: dict[str, int] = {}
        for row in ledger.rows(loaded.name):
            counts[row.status] = counts.get(row.status, 0) + 1
    finally:
        ledger.close()
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs planned"
    return f"ledger ({storage.describe()}): {shown}"


def _write_report(loaded, tracker, storage_url=None):  # type: ignore[no-untyped-def]
    from harness.reporting import build_report

    extras = None
    if loaded.experiment.tuning is not None:  # a tuned experiment: its studies join each task's section
        from harness.tuning_report import tuning_section

        extras = tuning_section(loaded, storage_url)
    from harness.report_mlflow import log_comparison

    settings = loaded.experiment.report
    paths = build_report(loaded.name, tracker, loaded.report_dir, experiment_file=str(loaded.path),
                         task_extras=extras, correction=settings.correction, reference_cell=settings.reference_cell,
                         horizon_fraction=settings.memory_horizon_fraction)
    log_comparison(tracker, paths)  # the verdict in MLflow too, as the experiment's comparison run
    return paths


@cli.command()
@strict_plugins_option
@click.argument("cells", nargs=-1, required=True)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A cell option, e.g. reset=after.")
@click.pass_context
def conformance(ctx: click.Context, cells: tuple[str, ...], options: tuple[str, ...]) -> None:
    """Run the cell contract tests (the ones the built-ins pass) on CELLS.

    Prints one line per test and a summary to stdout; writes no files. Runs under pytest when
    it is installed, else directly (same checks). Exit code 0 when the cells pass, 1 when a
    test fails (options the cell rejects included), 2 for an unknown cell.
    """
    from harness.conformance_runner import run_conformance

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


cli.add_command(data_command)
register_plugin_commands(cli, loaded_plugins)  # harness cells / harness tasks [show NAME]
from harness.report_cli import compare, export  # noqa: E402  (commands defined beside their helpers)

cli.add_command(compare)
cli.add_command(export)
from harness.status_cli import status  # noqa: E402 - a light module: `harness status` must answer fast

cli.add_command(status)


def main() -> None:
    cli(prog_name="harness")


if __name__ == "__main__":
    main()
