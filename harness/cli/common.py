"""What several commands share: loading plugins once, and the options for storage, leases and executors."""

from __future__ import annotations

import click

from harness.core.loading import LoadedPlugins, load_plugins


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


def storage_option(command):  # type: ignore[no-untyped-def]
    """``--storage URL`` (or $HARNESS_STORAGE): where the run ledger lives, overriding the file's ``storage``."""
    from harness.experiment.storage_url import STORAGE_ENV

    return click.option(
        "--storage", "storage_url", default=None, metavar="URL", envvar=STORAGE_ENV,
        help="Ledger storage, overriding the file's `storage`: sqlite:///path.db (one process), "
             "journal:///abs/path/ledger.journal (several processes, one machine), "
             f"postgresql://user:password@host:5432/db (many machines). Also ${STORAGE_ENV}.",
    )(command)


def lease_option(command):  # type: ignore[no-untyped-def]
    """``--lease-seconds`` (or $HARNESS_LEASE_SECONDS): how long a claimed run survives its worker's silence."""
    from harness.runs.run_states import DEFAULT_LEASE_SECONDS, LEASE_ENV

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


def from_command_line(ctx: click.Context, name: str, value: str | None) -> str | None:
    """The value if it was typed on the command line (not taken from the environment)."""
    return value if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE else None


def parse_assignment(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE")
    return key.strip(), yaml.safe_load(value)
