"""A self-contained HTML report of a ``SITHResult``: spectra, fidelity map and per-head tables.

Plotly draws the figures; its JavaScript is inlined once, so the file opens offline.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from .atomic import write_text_atomic
from .sith import SITHResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
details { margin: 0.3em 0; }
summary { cursor: pointer; font-weight: 600; }
.c { display: inline-block; margin-right: 0.7em; }
.w { color: #888; font-size: 11px; }
.meta td:first-child { font-weight: 600; }
"""


def _spectra_figure(result: SITHResult):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(result.layers)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"layer {layer}" for layer in result.layers])
    for p, layer in enumerate(result.layers):
        for h in range(result.n_heads):
            fig.add_trace(
                go.Scatter(y=result.singular_values[p, h].tolist(), mode="lines", name=f"H{h}",
                           legendgroup=f"H{h}", showlegend=p == 0,
                           hovertemplate=f"L{layer} H{h} sv %{{x}}: %{{y:.3f}}<extra></extra>"),
                row=p // cols + 1, col=p % cols + 1,
            )
    fig.update_xaxes(title_text="singular vector")
    fig.update_yaxes(title_text="singular value", rangemode="tozero")
    fig.update_layout(height=300 * rows, title="Singular-value spectra of W_VO (folded, centred), per head")
    return fig


def _fidelity_figure(result: SITHResult):
    import plotly.graph_objects as go

    mean_cos = result.cosine.mean(-1)  # [n_sel, H]
    fig = go.Figure(go.Heatmap(
        z=mean_cos.tolist(), x=[f"H{h}" for h in range(result.n_heads)], y=[f"L{layer}" for layer in result.layers],
        colorscale="Viridis", colorbar=dict(title="cosine"),
        hovertemplate="%{y} %{x}: mean joint-space cosine %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(height=120 + 30 * len(result.layers),
                      title="How well k concepts reconstruct each head's singular vectors (mean cosine)")
    return fig


def _head_table(result: SITHResult, layer: int, head: int, top_vectors: int, open_: bool = False) -> str:
    ex = result.head(layer, head)
    rows = []
    for v in ex.vectors[:top_vectors]:
        concepts = "".join(
            f'<span class="c">{html.escape(c)} <span class="w">{w:.2f}</span></span>' for c, w in v.concepts
        ) or "<i>(none)</i>"
        rows.append(f"<tr><td>{v.index}</td><td>{v.singular_value:.3f}</td><td>{concepts}</td>"
                    f"<td>{v.fidelity:.2f}</td><td>{v.cosine:.2f}</td></tr>")
    first = ", ".join(html.escape(c) for c, _ in ex.vectors[0].concepts[:3]) if ex.vectors else ""
    return (f"<details{' open' if open_ else ''}><summary>L{layer} H{head} &mdash; {first}</summary><table>"
            "<tr><th>sv</th><th>&sigma;</th><th>concepts (coefficient)</th><th>fidelity</th><th>cosine</th></tr>"
            + "".join(rows) + "</table></details>")


def render_html(result: SITHResult, top_vectors: int = 16) -> str:
    """The report as one HTML string (see ``write_html_report``)."""
    spectra = _spectra_figure(result).to_html(full_html=False, include_plotlyjs="inline")
    fidelity = _fidelity_figure(result).to_html(full_html=False, include_plotlyjs=False)
    meta = [
        ("model", result.model_name), ("method", f"{result.method} (k={result.k}, lambda={result.lam})"),
        ("singular vectors", f"{result.side} (what each head {'writes' if result.side == 'right' else 'reads'})"),
        ("image-side centring", result.centering), ("concepts in the dictionary", f"{result.vocabulary_size:,}"),
        ("layers", ", ".join(map(str, result.layers))),
        ("mean fidelity (paper's definition)", f"{float(result.fidelity.mean()):.3f}"),
        ("mean joint-space cosine", f"{float(result.cosine.mean()):.3f}"),
    ]
    meta_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta)
    heads = []
    for layer in result.layers:
        heads.append(f"<h3>Layer {layer}</h3>")
        heads += [_head_table(result, layer, h, top_vectors, open_=(layer, h) == (result.layers[0], 0))
                  for h in range(result.n_heads)]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SITH report: "
        f"{html.escape(result.model_name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>SITH head explanations</h1><table class='meta'>{meta_html}</table>"
        f"{spectra}{fidelity}<h2>Heads</h2><p>Each head's first {top_vectors} singular vectors, largest first, "
        "with the concepts COMP chose and their coefficients. Click a head to open it.</p>"
        + "".join(heads) + "</body></html>"
    )


def write_html_report(result: SITHResult, path: str | os.PathLike, top_vectors: int = 16) -> Path:
    """Write a self-contained HTML report (atomically) and return its path.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> write_html_report(result, "report.html").name
        'report.html'
    """
    if top_vectors < 1:
        raise ValueError(f"top_vectors must be >= 1, got {top_vectors}")
    return write_text_atomic(path, render_html(result, top_vectors))
