"""The report as a few block types, rendered to Markdown and to self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Strong:
    text: str


Cell = str | Strong


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report directory
    alt: str


@dataclass(frozen=True)
class Contents:
    """Links to the given level-2 headings."""

    headings: tuple[str, ...]


Block = Heading | Para | Bullets | Table | Image | Contents


def anchor(text: str) -> str:
    """The heading's id, as GitHub's Markdown makes it: lower case, spaces to "-", punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", text.lower(), flags=re.UNICODE).replace(" ", "-")



_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
nav ul { columns: 3; font-size: 0.9rem; margin: 0.3rem 0; }
nav li { margin: 0; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2.5rem; }
"""


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {_md(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {_md(block.text)}", ""]
        elif isinstance(block, Para):
            lines += [_md(block.text), ""]
        elif isinstance(block, Bullets):
            lines += [f"- {_md(item)}" for item in block.items] + [""]
        elif isinstance(block, Contents):
            lines += ["Contents: " + " · ".join(f"[{_md(h)}](#{anchor(h)})" for h in block.headings), ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{_md(block.alt)}]({block.path.as_posix()})", ""]
    return "\n".join(lines)


def render_html(title: str, blocks: Sequence[Block], report_dir: Path) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f'<h{block.level} id="{esc(anchor(block.text))}">{esc(block.text)}</h{block.level}>')
        elif isinstance(block, Contents):
            links = "".join(f'<li><a href="#{esc(anchor(h))}">{esc(h)}</a></li>' for h in block.headings)
            parts.append(f'<nav aria-label="Contents"><ul>{links}</ul></nav>')
        elif isinstance(block, Para):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode((report_dir / block.path).read_bytes()).decode("ascii")
            width = _png_width(report_dir / block.path) * 2 // 3  # 1.5 pixels per CSS pixel: sharp on HiDPI
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.alt)}" '
                         f'style="width: min(100%, {width}px)"></figure>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _md(text: str) -> str:
    """Markdown-safe text: one line, with table pipes and inline markup escaped."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", text)


def _md_cell(cell: Cell) -> str:
    return f"**{_md(cell.text)}**" if isinstance(cell, Strong) else _md(cell)


def _html_cell(cell: Cell) -> str:
    return f"<strong>{html.escape(cell.text)}</strong>" if isinstance(cell, Strong) else html.escape(cell)


def _png_width(path: Path) -> int:
    """The pixel width from a PNG's IHDR chunk (bytes 16-19)."""
    return int.from_bytes(path.read_bytes()[16:20], "big")
