"""Render a :class:`ReportData` as one self-contained, offline HTML page.

Plots are drawn with matplotlib (Agg) and embedded as base64 PNG; styles are inline; nothing
is fetched from anywhere. Every number is a link to the file it was read from (relative to the
page, with the key as the fragment: ``runs/rm/eval.json#heldout.accuracy``) or to the store
table it was computed from (listed at the end of the page). All text from runs and the store
goes through Jinja's autoescaping.

Example::

    write_report(build_report(["runs/ppo"]), "report.html")
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment

from rlhfkit.report.data import Fact, Plot, ReportData
from rlhfkit.report.template import TEMPLATE

STORE_TABLES = {
    "projects": "project settings: pay rates, overlap, minimum wage",
    "items": "the pairs shown to raters, gold answers",
    "judgments": "each rater's choice, labels, time on task and presentation order",
    "ledger": "what each rater was paid, per task and bonus",
    "users": "raters and their self-described groups (given with consent)",
}


def fmt(value, unit: str = "") -> str:
    """A value as text: shares as percentages, cents as dollars, floats to 4 digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if unit == "%":
            return f"{100 * value:.1f} %"
        if unit == "cents":
            return f"${value / 100:,.2f}"
        if unit == "cents/h":
            return f"${value / 100:,.2f}/h"
        if unit == "s":
            return f"{value:,.1f} s"
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:.4g}"
    return str(value)


def source_href(source: str, out_dir: Path) -> str:
    """The link of a source: a store table's entry on the page, or the file relative to it."""
    if source.startswith("store:"):
        return "#store-" + source[len("store:") :].split(",")[0]
    path, _, key = source.partition("#")
    try:
        rel = os.path.relpath(Path(path).resolve(), out_dir.resolve())
    except ValueError:
        rel = str(Path(path).resolve())
    return quote(rel.replace(os.sep, "/")) + (f"#{quote(key, safe='/[].')}" if key else "")


def plot_png(plot: Plot) -> str:
    """The plot as a ``data:image/png;base64,...`` URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if plot.kind == "interval":
        fig, ax = plt.subplots(figsize=(5.5, 0.6 + 0.45 * len(plot.categories)), dpi=90)
        est = [v if v is not None else float("nan") for v in plot.series[0].x]
        lo = [e - (lo if lo is not None else e) for e, lo in zip(est, plot.low, strict=True)]
        hi = [(h if h is not None else e) - e for e, h in zip(est, plot.high, strict=True)]
        ys = list(range(len(plot.categories)))
        ax.errorbar(est, ys, xerr=[lo, hi], fmt="o", color="#1f5f8b", capsize=4)
        ax.axvline(0, color="#888", lw=0.8)
        ax.set_yticks(ys, plot.categories)
        ax.invert_yaxis()
    else:
        fig, ax = plt.subplots(figsize=(5.5, 2.6), dpi=90)
        for s in plot.series:
            ax.plot(s.x, [y if y is not None else float("nan") for y in s.y], label=s.label)
        ax.set_ylabel(plot.y_label)
    ax.set_xlabel(plot.x_label)
    ax.set_title(plot.title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(data: ReportData, out_dir: str | Path = ".") -> str:
    """The page as a string; links are relative to ``out_dir`` (where the page will be)."""
    out_dir = Path(out_dir)
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["href"] = lambda source: source_href(source, out_dir)
    env.tests["fact"] = lambda cell: isinstance(cell, Fact)
    env.tests["number"] = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    files: dict[str, str] = {}
    tables: set[str] = set()
    for section in data.sections:
        sources = [f.source for f in section.facts]
        for t in section.tables:
            sources.append(t.source)
            sources += [c.source for row in t.rows for c in row if isinstance(c, Fact)]
        sources += [s.source for p in section.plots for s in p.series]
        sources += [s.source for s in section.samples]
        for src in sources:
            if src.startswith("store:"):
                tables.update(src[len("store:") :].split(","))
            else:
                path = src.partition("#")[0]
                files.setdefault(path, source_href(path, out_dir))
    images = {section.key: [plot_png(p) for p in section.plots] for section in data.sections}
    return env.from_string(TEMPLATE).render(
        data=data,
        images=images,
        files=sorted(files.items()),
        tables=[(t, STORE_TABLES.get(t, "")) for t in sorted(tables)],
    )


def write_report(data: ReportData, out: str | Path) -> Path:
    """Write the page to ``out`` atomically; returns its path."""
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(data, out.parent)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
