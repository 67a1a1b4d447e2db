"""One colour per cell, derived from its name alone, so a cell looks the same in every plot and report."""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable

__all__ = ["cell_color", "colors"]

#: The built-in cells: families close in hue (GRUs green, LSTMs blue), vanilla apart.
_FIXED = {"vanilla": "#d62728", "gru": "#2ca02c", "gru_simple": "#8fbc3f", "lstm": "#1f77b4",
          "peephole_lstm": "#17becf"}


def cell_color(label: str) -> str:
    """A hex colour for ``label``: fixed for the built-ins, else a hue from the label's SHA-1."""
    if label in _FIXED:
        return _FIXED[label]
    digest = hashlib.sha1(label.encode("utf-8")).digest()
    hue = digest[0] / 255
    lightness = 0.35 + 0.2 * digest[1] / 255
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.65)
    return "#{:02x}{:02x}{:02x}".format(round(red * 255), round(green * 255), round(blue * 255))


def colors(labels: Iterable[str]) -> dict[str, str]:
    return {label: cell_color(label) for label in labels}
