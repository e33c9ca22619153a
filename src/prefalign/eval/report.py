"""A self-contained HTML report: inline CSS, matplotlib plots as base64 PNG, example generations.

Every piece of model or user text is HTML-escaped; the file needs no network and no other files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.35em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.up{color:#1a7f37}.down{color:#b42318}.muted{color:#666;font-size:.9em}
.plots img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:1em 0;padding:.6em;border:1px solid #e5e5e5;
border-radius:6px}.ex h4{margin:.2em 0 .4em}.ex pre{white-space:pre-wrap;font-family:inherit;margin:0;
background:#fafafa;padding:.5em;border-radius:4px}.score{font-size:.85em;color:#555}
"""

METRIC_LABELS = {
    "gold_mean": "VADER compound mean (gold)",
    "gold_strong_rate": "share with VADER >= 0.8",
    "judge2_mean": "TextBlob polarity mean",
    "reward_mean": "reward-model score mean",
    "distinct2": "distinct-2",
    "mean_length": "mean length (tokens)",
    "eos_rate": "share ending with EOS",
}


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(before: Sequence[float], after: Sequence[float], *, title: str, xlabel: str) -> str:
    """Overlaid histograms of a score before and after training, as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = [i / 10 for i in range(-10, 11)]
    ax.hist(list(before), bins=bins, alpha=0.55, label="before", color="#8c8c8c")
    ax.hist(list(after), bins=bins, alpha=0.55, label="after", color="#2f7ed8")
    ax.axvline(0.8, color="#b42318", linestyle="--", linewidth=1, label="strong (0.8)")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("completions")
    ax.legend()
    return _png(fig)


def bars_png(before: dict[str, float], after: dict[str, float], keys: Sequence[str], *, title: str) -> str:
    """Grouped bar chart of metrics before and after, as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if _finite(before.get(k)) and _finite(after.get(k))]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [before[k] for k in keys], width=0.4, label="before", color="#8c8c8c")
    ax.bar([x + 0.2 for x in xs], [after[k] for k in keys], width=0.4, label="after", color="#2f7ed8")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def curve_png(values: Sequence[float], *, title: str, ylabel: str) -> str:
    """A simple line plot (e.g. the training loss per step), as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.plot(range(1, len(values) + 1), list(values), color="#2f7ed8")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return _png(fig)


def frontier_png(
    series: dict[str, list[tuple[float, float, str]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    baseline: tuple[str, float] | None = None,
) -> str:
    """One line per series (name -> labelled points ``(x, y, label)``, joined in x order), e.g. each
    method's gold score against its KL over a sweep of its KL strength; as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, points in series.items():
        shown = sorted((x, y, label) for x, y, label in points if _finite(x) and _finite(y))
        if not shown:
            continue
        line = ax.plot([p[0] for p in shown], [p[1] for p in shown], marker="o", label=name)[0]
        for x, y, label in shown:
            if label != name:
                ax.annotate(
                    label,
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                    color=line.get_color(),
                )
    if baseline is not None:
        ax.axhline(baseline[1], color="#8c8c8c", linestyle="--", linewidth=1, label=baseline[0])
    ax.legend(fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(fig)


def methods_table(before: dict[str, Any], methods: dict[str, dict[str, Any]]) -> str:
    """HTML table with one row per alignment method (and the base policy): the metrics of
    :data:`METRIC_LABELS`, then KL to the reference and training steps."""
    keys = [k for k in METRIC_LABELS if any(k in m for m in methods.values())]
    header = "".join(f"<th>{html.escape(METRIC_LABELS[k])}</th>" for k in keys)
    rows = [
        f"<tr><td>base (before)</td>{''.join(f'<td>{_fmt(before.get(k))}</td>' for k in keys)}<td>0</td><td></td></tr>"
    ]
    for name, m in methods.items():
        cells = "".join(f"<td>{_fmt(m.get(k))}</td>" for k in keys)
        kl = f"{_fmt(m.get('kl'))} &plusmn; {_fmt(m.get('kl_stderr'))}"
        rows.append(
            f"<tr><td>{html.escape(name)}</td>{cells}<td>{kl}</td><td>{_fmt(m.get('steps'))}</td></tr>"
        )
    return f"<table><tr><th>method</th>{header}<th>KL, nats</th><th>steps</th></tr>{''.join(rows)}</table>"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "n/a"
    return html.escape(str(value))


def metrics_table(before: dict[str, Any], after: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """HTML table: metric, before, after, change."""
    labels = labels or METRIC_LABELS
    rows = []
    for key, label in labels.items():
        if key not in before and key not in after:
            continue
        b, a = before.get(key), after.get(key)
        delta = a - b if _finite(a) and _finite(b) else None
        cls = "" if delta is None or delta == 0 else ("up" if delta > 0 else "down")
        rows.append(
            f"<tr><td>{html.escape(label)}</td><td>{_fmt(b)}</td><td>{_fmt(a)}</td>"
            f"<td class='{cls}'>{'' if delta is None else f'{delta:+.3f}'}</td></tr>"
        )
    return (
        "<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def examples_html(examples: Sequence[dict[str, Any]]) -> str:
    """Side-by-side generations; each example has prompt, before, after and optional *_score keys."""
    parts = []
    for ex in examples:
        cells = []
        for side in ("before", "after"):
            score = ex.get(f"{side}_score")
            score_html = f"<div class='score'>VADER {score:+.2f}</div>" if _finite(score) else ""
            cells.append(
                f"<div><h4>{side}</h4><pre>{html.escape(str(ex.get(side, '')))}</pre>{score_html}</div>"
            )
        parts.append(
            f"<div><b>{html.escape(str(ex.get('prompt', '')))}</b><div class='ex'>{''.join(cells)}</div></div>"
        )
    return "".join(parts)


def render_report(
    *,
    title: str,
    summary: dict[str, Any],
    plots: Sequence[tuple[str, str]] = (),
    examples: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The whole HTML page. ``plots`` are (caption, data URI) pairs; ``notes`` are plain-text paragraphs."""
    before, after = summary.get("before", {}), summary.get("after", {})
    head = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    facts = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in head.items())
    plot_html = "".join(
        f"<figure><img alt='{html.escape(cap)}' src='{uri}'><figcaption class='muted'>{html.escape(cap)}"
        "</figcaption></figure>"
        for cap, uri in plots
        if uri.startswith("data:image/png;base64,")
    )
    notes_html = "".join(f"<p class='muted'>{html.escape(n)}</p>" for n in notes)
    methods = summary.get("methods") or {}
    methods_html = (
        f"<h2>Methods side by side (same pairs, same held-out prompts)</h2>{methods_table(before, methods)}"
        if len(methods) > 1
        else ""
    )
    extra = {
        k: v
        for k, v in summary.items()
        if isinstance(v, dict | list)
        and k not in ("before", "after")
        and not (k == "methods" and methods_html)
    }
    extra_html = html.escape(json.dumps(extra, indent=2, default=str)) if extra else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{notes_html}"
        f"{methods_html}"
        f"<h2>Before vs after{' (' + html.escape(str(summary['method'])) + ')' if 'method' in summary else ''}"
        f" (held-out prompts)</h2>{metrics_table(before, after)}"
        f"<table>{facts}</table>"
        f"<h2>Plots</h2><div class='plots'>{plot_html}</div>"
        f"<h2>Example generations</h2>{examples_html(examples)}"
        + (f"<h2>Details</h2><pre>{extra_html}</pre>" if extra_html else "")
        + "</body></html>"
    )


def write_report(path: str | Path, **kwargs: Any) -> Path:
    """Render with :func:`render_report` and write UTF-8 HTML to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(**kwargs), encoding="utf-8")
    return path
