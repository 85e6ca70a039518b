"""Charts as accessible SVG, drawn on the server by pygal (no JavaScript).

Each chart is an ``<svg role="img">`` named by ``aria-label``; the page shows the same
numbers in a table beside it, so nothing is only in the picture.
"""

from __future__ import annotations

import html

import pygal
from pygal.style import Style

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#0b0c0c",
    foreground_strong="#0b0c0c",
    foreground_subtle="#505a5f",
    # GOV.UK-like palette: every colour at least 3:1 against white (WCAG 1.4.11)
    colors=("#1d70b8", "#d4351c", "#00703c", "#6f3c97", "#b58840", "#0b0c0c", "#f47738"),
    font_family="Arial, Helvetica, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=13,
    title_font_size=15,
)


def _svg(chart: pygal.graph.graph.Graph, label: str) -> str:
    svg = str(chart.render(is_unicode=True))
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(label)}"', 1)


def _chart(
    kind: type[pygal.graph.graph.Graph], title: str, height: int = 360, **options: object
) -> pygal.Graph:
    return kind(
        title=title,
        style=STYLE,
        js=[],  # no script from anywhere: the chart is a picture, the table has the numbers
        disable_xml_declaration=True,
        width=720,
        height=height,
        legend_at_bottom=True,
        print_values=False,
        **options,
    )


def stacked_bars(
    title: str, labels: list[str], series: dict[str, list[float]], description: str
) -> str:
    """One bar per label, stacked by series (e.g. sessions per month by kind)."""
    chart = _chart(pygal.StackedBar, title, x_label_rotation=30)
    chart.x_labels = labels
    for name, values in series.items():
        chart.add(name, values)
    return _svg(chart, description)


def bars(title: str, values: dict[str, float | None], description: str) -> str:
    """One bar per key (None: no data, drawn as a gap)."""
    chart = _chart(pygal.Bar, title, x_label_rotation=20, show_legend=False)
    chart.x_labels = list(values)
    chart.add(title, list(values.values()))
    return _svg(chart, description)


def horizontal_bars(title: str, values: dict[str, float | None], description: str) -> str:
    """One horizontal bar per key, for many or long labels (e.g. measure and band)."""
    chart = _chart(
        pygal.HorizontalBar, title, height=max(240, 60 + 24 * len(values)), show_legend=False
    )
    chart.x_labels = list(values)
    chart.add(title, list(values.values()))
    return _svg(chart, description)
