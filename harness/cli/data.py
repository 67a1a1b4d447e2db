"""``harness data list|fetch|verify``: the data sets the installed tasks declare, in the data folder."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from harness.core.errors import HarnessError, UnknownNameError
from harness.core.loading import load_plugins
from harness.data.datasets import DataRoot, DataSet, data_root, file_state
from harness.data.fetch import check_mirror, fetch

DATA_DIR_HELP = ("The folder that holds every data set's folder (ptb/, conll2003/, ...). "
                 "Default: $HARNESS_DATA_DIR, else the per-user data folder (~/.local/share/rnn-harness on Linux).")


@dataclass
class Known:
    """A declared data set, the tasks that read it and the plugin that declared it."""

    data_set: DataSet
    tasks: list[str]
    plugin: str


def known_data_sets(ctx: click.Context) -> dict[str, Known]:
    """Every data set the installed tasks declare, by name (the first declaration of a name wins)."""
    root = ctx.find_root()
    loaded = load_plugins(strict=(root.obj or {}).get("strict_plugins") or None)
    for plugin in loaded.broken:
        click.echo(f"Warning: plugin {plugin.name!r} is broken: {'; '.join(plugin.errors)}", err=True)
    known: dict[str, Known] = {}
    for name in loaded.tasks.names():
        entry = loaded.tasks.entry(name)
        for data_set in getattr(entry.item, "data_sets", ()):
            seen = known.setdefault(data_set.name, Known(data_set, [], entry.plugin))
            if seen.data_set != data_set:
                click.echo(f"Warning: data set {data_set.name!r} of task {name!r} (plugin {entry.plugin!r}) differs "
                           f"from the one plugin {seen.plugin!r} declares; using {seen.plugin!r}'s", err=True)
            seen.tasks.append(name)
    return known


def pick(known: dict[str, Known], names: tuple[str, ...]) -> list[Known]:
    """The named data sets; an unknown name exits 2 with the closest match."""
    for name in names:
        if name not in known:
            raise UnknownNameError("data set", name, known)
    return [known[name] for name in dict.fromkeys(names)]


def presence(root: DataRoot, data_set: DataSet) -> str:
    """present / missing / incomplete, judged by the files' presence and sizes (verify hashes them)."""
    states = [file_state(root.path, data_set, f, check_hash=False) for f in data_set.files if not f.read_when]
    if all(state == "ok" for state in states):
        return "present"
    if all(state == "missing" for state in states):
        return "missing"
    return "incomplete"


@click.group("data")
def data() -> None:
    """List, download and check the data sets the installed tasks read.

    Data folder: --data-dir, else $HARNESS_DATA_DIR, else the per-user data folder
    (~/.local/share/rnn-harness on Linux). Tasks read it the same way unless their data_dir option is set.
    """


@data.command("list")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_data_sets(ctx: click.Context, data_dir: str | None, as_json: bool) -> None:
    """Every data set the installed tasks declare: source, licence, files with sha256, and whether it is here."""
    root = data_root(data_dir)
    known = known_data_sets(ctx)
    if as_json:
        rows = [{**k.data_set.as_dict(), "tasks": k.tasks, "plugin": k.plugin,
                 "present": presence(root, k.data_set), "path": str(root.path / k.data_set.folder)}
                for k in known.values()]
        click.echo(json.dumps({"data_dir": str(root.path), "data_dir_origin": root.origin, "data_sets": rows},
                              indent=2))
        return
    click.echo(f"Data folder: {root.path}  ({root.origin})")
    for item in known.values():
        echo_data_set(root, item)


def echo_data_set(root: DataRoot, item: Known) -> None:
    data_set = item.data_set
    click.echo(f"\n{data_set.name:<16} {presence(root, data_set):<11} {data_set.folder}/  {data_set.description}")
    click.echo(f"  read by:  task {', '.join(item.tasks)} (plugin {item.plugin}); options: {', '.join(data_set.options)}")
    click.echo(f"  licence:  {data_set.licence}")
    click.echo(f"  source:   {data_set.source}")
    for file in data_set.files:
        when = f"  [only with {file.read_when}]" if file.read_when else ""
        click.echo(f"  {file.path:<30} {file.size:>11,} B  sha256 {file.sha256}{when}")
        click.echo(f"      from {file.url}" + (f" (member {file.member})" if file.member else ""))


@data.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--mirror", default=None, metavar="URL",
              help="Download from URL/<data set>/<file name> instead of the canonical URLs.")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--force", is_flag=True, help="Download again even when the files are present and verified.")
@click.pass_context
def fetch_data_sets(ctx: click.Context, names: tuple[str, ...], mirror: str | None, data_dir: str | None,
                    force: bool) -> None:
    """Download data sets into the data folder, checking every file's sha256 before it is moved into place.

    An interrupted download resumes on the next run. Writes <data folder>/<folder>/ (ptb/, conll2003/, ...).
    """
    chosen = pick(known_data_sets(ctx), names)
    mirror = check_mirror(mirror) if mirror else None
    root = data_root(data_dir)
    root.path.mkdir(parents=True, exist_ok=True)
    for item in chosen:
        fetch(item.data_set, root.path, mirror=mirror, force=force, echo=click.echo)


@data.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.pass_context
def verify_data_sets(ctx: click.Context, names: tuple[str, ...], data_dir: str | None) -> None:
    """Check the sha256 of every file of the named data sets (default: those present); exit 1 on a mismatch."""
    known = known_data_sets(ctx)
    root = data_root(data_dir)
    chosen = pick(known, names) if names else [k for k in known.values() if presence(root, k.data_set) != "missing"]
    if not chosen:
        click.echo(f"No data set is present under {root.path} ({root.origin}); fetch one with `harness data fetch NAME`.")
        return
    failures = [problem for item in chosen for problem in verify_one(root, item.data_set)]
    if failures:
        raise HarnessError(f"verification failed under {root.path}: {'; '.join(failures)}")


def verify_one(root: DataRoot, data_set: DataSet) -> list[str]:
    """Check one set's files, printing a line per file; the problems, each naming its file."""
    if presence(root, data_set) == "missing":
        click.echo(f"{data_set.name}: not present")
        return [f"{data_set.name} is not present in {root.path / data_set.folder} "
                f"(run `harness data fetch {data_set.name}`)"]
    problems = []
    for file in data_set.files:
        state = file_state(root.path, data_set, file)
        path = f"{data_set.folder}/{file.path}"
        if state == "missing" and file.read_when:
            click.echo(f"  -       {path} (not present; read only with {file.read_when})")
            continue
        click.echo(f"  {'ok' if state == 'ok' else 'FAILED':<7} {path}" + ("" if state == "ok" else f" ({state})"))
        if state == "missing":
            problems.append(f"{path} is missing (run `harness data fetch {data_set.name}`)")
        elif state == "mismatch":
            problems.append(f"{path} does not have sha256 {file.sha256} and {file.size:,} bytes")
    click.echo(f"{data_set.name}: {'verified' if not problems else 'FAILED'}")
    return problems
