"""``harness cells`` and ``harness tasks``: what is installed, and every option of one cell or task.

Third-party plugins are described exactly like the built-ins: everything shown comes from the
registries, the plugin's Config (pydantic field descriptions) and the class attributes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from harness.cli.common import loaded_plugins, parse_assignment, strict_plugins_option
from harness.core.loading import LoadedPlugins
from harness.core.plugin_options import describe_options, one_line


def register_plugin_commands(cli: click.Group, plugins: Callable[[click.Context], LoadedPlugins]) -> None:
    """Add ``cells`` and ``tasks`` (each with ``show NAME``) to the ``harness`` group."""
    cli.add_command(_kind_group("cell", plugins))
    cli.add_command(_kind_group("task", plugins))


def _kind_group(kind: str, plugins: Callable[[click.Context], LoadedPlugins]) -> click.Group:
    """``harness cells`` or ``harness tasks``: the listing, with ``show NAME`` below it."""

    @click.group(name=f"{kind}s", invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_context
    def group(ctx: click.Context, as_json: bool) -> None:
        if ctx.invoked_subcommand is None:
            _print_listing(kind, plugins(ctx), as_json)

    group.help = (f"List the installed {kind}s: name, the plugin (built-in or its distribution) and what it is. "
                  f"Prints to stdout; writes no files. `harness {kind}s show NAME` prints every option.")

    @group.command(name="show")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.pass_context
    def show(ctx: click.Context, name: str, as_json: bool) -> None:
        details = _details(kind, name, plugins(ctx))
        click.echo(json.dumps(details, indent=2, default=str) if as_json else "\n".join(_format_details(kind, details)))

    show.help = (f"Print every option of {kind} NAME: type, default, allowed values and description"
                 + (", the data sets it reads and its primary metric" if kind == "task" else "")
                 + ". Prints to stdout; writes no files.")
    return group


def _print_listing(kind: str, loaded: LoadedPlugins, as_json: bool) -> None:
    rows = [_summary(kind, name, loaded) for name in sorted(_registry(kind, loaded).names())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        extra = f"  [{row['family']}; {row['primary_metric']}]" if kind == "task" else ""
        click.echo(f"{row['name']:<16} {row['source']:<28} {row['description']}{extra}")


def _registry(kind: str, loaded: LoadedPlugins) -> Any:
    return loaded.cells if kind == "cell" else loaded.tasks


def _summary(kind: str, name: str, loaded: LoadedPlugins) -> dict[str, Any]:
    item = _registry(kind, loaded).get(name)
    plugin = loaded.plugin_of_cell(name) if kind == "cell" else loaded.plugin_of_task(name)
    source = "built-in" if plugin.builtin else f"{plugin.distribution or plugin.module} {plugin.version or ''}"
    row: dict[str, Any] = {
        "name": name,
        "plugin": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "source": source.strip(),
        "description": _description(kind, item),
    }
    if kind == "task":
        row.update(family=item.family, primary_metric=item.primary_metric,
                   direction="higher is better" if item.higher_is_better else "lower is better")
    return row


def _description(kind: str, item: type) -> str:
    """A task's class docstring; a cell's module docstring (its class docstring gives the weight layout)."""
    if kind == "cell":
        module = sys.modules.get(item.__module__)
        if module is not None and module.__doc__:
            return one_line(module.__doc__)
    return one_line(item.__doc__)


def _details(kind: str, name: str, loaded: LoadedPlugins) -> dict[str, Any]:
    if name not in _registry(kind, loaded) and name.lower() in _registry(kind, loaded):
        name = name.lower()  # `harness tasks show NER`: names are lowercase
    item = _registry(kind, loaded).get(name)  # an unknown name: exit 2 listing the installed ones
    details = _summary(kind, name, loaded)
    details["options"] = [option.as_dict() for option in describe_options(item.Config)]
    if kind == "task":
        details["data_sets"] = [_data_set(d) for d in getattr(item, "data_sets", ())]
    else:
        details["gate_count"] = item.gate_count
        details["state_names"] = list(item.state_names)
        details["weights"] = one_line(item.__doc__)
    return details


def _data_set(data_set: Any) -> dict[str, Any]:
    """Whatever a task declares: a name string, or an object with a name and optional facts."""
    if isinstance(data_set, str):
        return {"name": data_set}
    facts = {"name": getattr(data_set, "name", str(data_set))}
    for attribute in ("folder", "description", "licence", "source", "options"):
        value = getattr(data_set, attribute, None)
        if value:
            facts[attribute] = list(value) if isinstance(value, tuple) else value
    return facts


def _format_details(kind: str, details: dict[str, Any]) -> list[str]:
    lines = [f"{kind} {details['name']}: {details['description']}",
             f"  plugin: {details['plugin']} ({details['source']})"]
    if kind == "task":
        lines.append(f"  family: {details['family']}")
        lines.append(f"  primary metric: {details['primary_metric']} ({details['direction']})")
        data_sets = details["data_sets"]
        if data_sets:
            lines.append("  data sets:")
            for data_set in data_sets:
                folder = f" (folder {data_set['folder']}/)" if data_set.get("folder") else ""
                text = f": {data_set['description']}" if data_set.get("description") else ""
                lines.append(f"    {data_set['name']}{folder}{text}")
        else:
            lines.append("  data sets: none (generated)")
    else:
        lines.append(f"  state: {', '.join(details['state_names'])}; gates: {details['gate_count']}")
        if details["weights"]:
            lines.append(f"  weights: {details['weights']}")
    heading = f"  options ({kind}s[...].options in an experiment file):"
    lines.append(heading if details["options"] else "  options: none")
    for option in details["options"]:
        default = "(required)" if option["required"] else json.dumps(option["default"], default=str)
        allowed = f"; allowed: {option['allowed']}" if option["allowed"] else ""
        lines.append(f"    {option['name']}: {option['type']} = {default}{allowed}")
        if option["description"]:
            lines.append(f"        {option['description']}")
    return lines


@click.command("plugins")
@strict_plugins_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
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


@click.command()
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
    from harness.conformance.runner import run_conformance

    loaded = loaded_plugins(ctx)
    for name in cells:
        loaded.cells.get(name)  # unknown names: exit 2 with the installed ones listed
    sys.exit(run_conformance(list(cells), dict(parse_assignment(o) for o in options)))
