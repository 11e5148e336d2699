"""What the Heads, Edit and Compare tabs show, as plain data: figures, tables, Markdown.

Every function takes the ``Workbench`` and the raw widget values, checks them, and raises
``ValueError`` with the fix when they are wrong (the UI shows it as a Gradio error).
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sith_lens.defaults import COMPARE, EDIT
from sith_lens.limits import MAX_MULTIPLIER

from .images import load_image
from .workbench import EditSpec, Workbench, default_download_dir, prune_folder

#: Exported edited models kept in the download folder (oldest removed first; a ViT-B/32 is 600 MB).
MAX_EXPORTS = 4

def _concept_text(concepts: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{c} {w:.2f}" for c, w in concepts) or "(no concept)"


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}") from None
    if number != float(value) or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return number


# -- Heads -------------------------------------------------------------------------------------------
def overview_figure(wb: Workbench) -> Any:
    """Heat map over layers x heads of each head's fidelity (singular-value weighted), with the
    top singular vector's explanation on hover.

    Example:
        >>> overview_figure(Workbench("toy")).data[0].z.shape     # (n_layers, n_heads)
        (6, 8)
    """
    import plotly.graph_objects as go

    result = wb.sith()
    sv = result.singular_values.double()
    fid = (result.fidelity.double() * sv).sum(-1) / sv.sum(-1).clamp_min(1e-12)
    hover = [[f"L{layer} H{h}<br>sv0: {_concept_text(result.head(layer, h).vectors[0].concepts[:3])}"
              for h in range(result.n_heads)] for layer in result.layers]
    fig = go.Figure(go.Heatmap(
        z=fid.numpy(), x=[f"H{h}" for h in range(result.n_heads)], y=[f"L{layer}" for layer in result.layers],
        colorscale="Viridis", zmin=0, text=hover, hoverinfo="text+z", colorbar=dict(title="fidelity"),
    ))
    fig.update_layout(title="How well COMP explains each head (σ-weighted fidelity)", height=340,
                      margin=dict(l=40, r=20, t=50, b=30), yaxis=dict(autorange="reversed"))
    return fig


def head_view(wb: Workbench, layer: Any, head: Any, n_vectors: int = 16) -> tuple[Any, pd.DataFrame, str]:
    """One head: its singular-value spectrum (bars) with each vector's fidelity (line), a table of
    its leading singular vectors with their COMP concepts, and a summary.

    Example:
        >>> fig, table, summary = head_view(Workbench("toy"), 5, 3)
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    result = wb.sith()
    n_layers = result.n_layers
    layer = _int(layer, "layer", -n_layers, n_layers - 1)
    head = _int(head, "head", 0, result.n_heads - 1)
    explanation = result.head(layer, head)
    vectors = explanation.vectors
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    idx = [v.index for v in vectors]
    fig.add_trace(go.Bar(x=idx, y=[v.singular_value for v in vectors], name="singular value",
                         hovertext=[_concept_text(v.concepts[:3]) for v in vectors]), secondary_y=False)
    fig.add_trace(go.Scatter(x=idx, y=[v.fidelity for v in vectors], name="fidelity", mode="lines+markers"),
                  secondary_y=True)
    fig.update_yaxes(title_text="σ", secondary_y=False)
    fig.update_yaxes(title_text="fidelity", range=[0, 1.05], secondary_y=True)
    fig.update_layout(title=f"L{explanation.layer} H{head}: spectrum of W_VO", xaxis_title="singular vector",
                      height=320, margin=dict(l=40, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.25))
    rows = [{"vector": v.index, "σ": round(v.singular_value, 3), "fidelity": round(v.fidelity, 3),
             "joint cosine": round(v.cosine, 3), "COMP concepts (coefficient)": _concept_text(v.concepts)}
            for v in vectors[:n_vectors]]
    sv = np.array(explanation.singular_values)
    fid = np.array([v.fidelity for v in vectors])
    top_share = float(sv[0] ** 2 / (sv**2).sum()) if sv.any() else 0.0
    summary = (f"**L{explanation.layer} H{head}** of `{result.model_name}`: rank {len(sv)}, "
               f"σ₀ = {sv[0]:.3f} carries {top_share:.0%} of the energy; mean fidelity {fid.mean():.3f} "
               f"(σ-weighted {float((fid * sv).sum() / max(sv.sum(), 1e-12)):.3f}). "
               f"COMP {result.method}, k = {result.k}, λ = {result.lam}, {result.vocabulary_size:,} concepts.")
    return fig, pd.DataFrame(rows), summary


def concept_search(wb: Workbench, query: str, top: int = 10) -> tuple[pd.DataFrame, str]:
    """Which heads write ``query``: heads ranked by the σ-weighted coefficient of the concept in
    their explanations, with the singular vectors that use it.

    Example:
        >>> table, note = concept_search(Workbench("toy"), "red")
    """
    query = (query or "").strip()
    if not query:
        raise ValueError("type a concept to search for, e.g. red")
    result = wb.sith()
    columns = ["layer", "head", "score", "singular vectors (coefficient)"]
    ranked = result.heads_for(query, top=top)
    if not ranked:
        close = difflib.get_close_matches(query, result.concepts, n=5, cutoff=0.5)
        hint = f" Concepts used in explanations that look close: {', '.join(close)}." if close else ""
        return pd.DataFrame(columns=columns), (f"No head's explanation uses **{query}**.{hint} Only concepts that "
                                               f"COMP picked for some singular vector can be found ({len(result.concepts)} of them).")
    hits = result.find(query)
    rows = []
    for layer, head, score in ranked:
        uses = [f"sv{h.index} {h.coef:.2f}" for h in hits if (h.layer, h.head) == (layer, head)]
        rows.append({"layer": layer, "head": head, "score": round(score, 4),
                     "singular vectors (coefficient)": ", ".join(uses[:6])})
    note = f"**{query}** appears in {len(hits)} singular vectors across {len({(h.layer, h.head) for h in hits})} heads."
    return pd.DataFrame(rows, columns=columns), note


# -- Edit --------------------------------------------------------------------------------------------
def parse_list(value: Any) -> list[str]:
    """Concepts or prompts from a dropdown list or a comma-separated string, stripped, empties dropped.

    Example:
        >>> parse_list("red, blue ,")
        ['red', 'blue']
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def default_prompts(wb: Workbench, attribute: str = "color") -> list[str]:
    """Zero-shot classes offered by default: one prompt per value of a toy attribute, or a few
    everyday classes for other models."""
    if wb.is_toy:
        from sith_lens.toyworld.captions import attribute_prompts

        return attribute_prompts(attribute)
    return [f"a photo of a {c}." for c in ("cat", "dog", "car", "bird", "person", "house")]


#: Layers the Edit tab edits by default, as the CLI's ``sith-lens edit``.


def edit_spec(wb: Workbench, suppress: Any, amplify: Any, factor: Any, threshold: Any,
              layers: Any = EDIT.layers) -> EditSpec:
    """Check the Edit tab's values and bundle them (``layers``: "all", "-4:" or "0,3,-1")."""
    sup, amp = tuple(parse_list(suppress)), tuple(parse_list(amplify))
    if not sup and not amp:
        raise ValueError("nothing to edit: choose at least one concept to suppress or to amplify")
    both = sorted(set(sup) & set(amp))
    if both:
        raise ValueError(f"{both} are both suppressed and amplified; pick one for each concept")
    try:
        factor, threshold = float(factor), float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"factor and threshold must be numbers, got {factor!r} and {threshold!r}") from None
    if not np.isfinite(factor) or abs(factor) > MAX_MULTIPLIER:
        raise ValueError(f"the amplify factor must be a finite number in [-{MAX_MULTIPLIER:g}, {MAX_MULTIPLIER:g}], got {factor}")
    if not 0 < threshold <= 1:
        raise ValueError(f"the threshold is a share of a vector's explanation, in (0, 1]; got {threshold}")
    from sith_lens.sith import parse_layers

    chosen = parse_layers(str(layers if layers is not None else "all"), wb.model.vision.cfg.n_layers)
    return EditSpec(sup, amp, factor, threshold, tuple(chosen))


@torch.no_grad()
def class_probabilities(model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
    """Zero-shot class probabilities ``[n_images, n_classes]`` (softmax of the model's scaled cosines).

    Example:
        >>> import sith_lens as sl
        >>> image = Image.fromarray(sl.ToyWorld(seed=0).batch(0, 1).images[0])
        >>> class_probabilities(sl.load_clip("toy"), [image], ["a red object", "a blue object"]).sum(-1)
        tensor([1.])
    """
    from sith_lens.zeroshot import zero_shot_weights

    weights = zero_shot_weights(model, [[p] for p in prompts])
    emb = model.encode_image(model.preprocess(images), normalize=True).float().cpu()
    scale = float(model.logit_scale.exp()) if float(model.logit_scale) != 0 else 100.0
    return torch.softmax(scale * emb @ weights.T, dim=-1)


def edit_view(
    wb: Workbench, suppress: Any, amplify: Any, factor: Any, threshold: Any, prompts: Any, upload: Any = None,
    attribute: str = "color", layers: Any = EDIT.layers,
) -> tuple[str, pd.DataFrame, Any, list[tuple[Image.Image, str]]]:
    """Zero-shot predictions before and after an edit: a summary, a table over the sample images
    (one-object toy scenes covering ``attribute``'s values) and the upload, a before/after bar
    chart for the upload (or the first sample), and the images captioned with their prediction
    change.

    Example:
        >>> wb = Workbench("toy")
        >>> summary, table, fig, gallery = edit_view(wb, ["red"], [], 2.0, 0.5, "a red object, a blue object")
        >>> summary[:48]
        '**Edit** (suppress red; threshold 0.5; layers 2,'
    """
    import plotly.graph_objects as go

    spec = edit_spec(wb, suppress, amplify, factor, threshold, layers)
    classes = parse_list(prompts)
    if len(classes) < 2:
        raise ValueError("give at least two zero-shot classes, separated by commas (e.g. a red object, a blue object)")
    images = [(im, f"sample {i}", truth) for i, (im, truth) in enumerate(wb.edit_samples(attribute))]
    uploaded = [(load_image(upload), "your image", None)] if upload is not None and upload != "" else []
    if not images and not uploaded:
        raise ValueError("upload an image to classify (this model has no sample images)")
    edited, m = wb.edited(spec)
    pictures = [im for im, _, _ in images]

    def predict(model: Any) -> torch.Tensor:
        return class_probabilities(model, pictures, classes) if pictures else torch.zeros(0, len(classes))

    key = (attribute, tuple(classes))
    before = wb.sample_predictions(("before", *key), lambda: predict(wb.model))
    after = wb.sample_predictions((spec, *key), lambda: predict(edited))
    if uploaded:
        with wb.lock:
            before = torch.cat([class_probabilities(wb.model, [uploaded[0][0]], classes), before])
            after = torch.cat([class_probabilities(edited, [uploaded[0][0]], classes), after])
        images = uploaded + images
    rows, gallery = [], []
    for (im, name, truth), p, q in zip(images, before, after):
        b, a = int(p.argmax()), int(q.argmax())
        rows.append({"image": name, "truth": truth or "", "before": f"{classes[b]} ({p[b]:.2f})",
                     "after": f"{classes[a]} ({q[a]:.2f})", "changed": "yes" if a != b else "",
                     "p(before class) after": round(float(q[b]), 3)})
        gallery.append((im, f"{name}: {classes[b]} → {classes[a]}" if a != b else f"{name}: {classes[b]}"))
    fig = go.Figure([go.Bar(name="before", x=classes, y=before[0].tolist()),
                     go.Bar(name="after", x=classes, y=after[0].tolist())])
    fig.update_layout(barmode="group", title=f"{images[0][1]}: zero-shot probabilities", yaxis_title="p",
                      height=320, margin=dict(l=40, r=20, t=50, b=80))
    changed = m != 1
    n_changed = int((before.argmax(-1) != after.argmax(-1)).sum())
    what = "; ".join(f"{verb} {', '.join(q)}" for verb, q in (("suppress", spec.suppress),
                                                                 (f"amplify ×{spec.factor:g}", spec.amplify)) if q)
    where = ", ".join(map(str, spec.layers)) if spec.layers is not None else "all"
    summary = (f"**Edit** ({what}; threshold {spec.threshold:g}; layers {where}): {int(changed.sum())} singular vectors in "
               f"{int(changed.any(-1).sum())} heads changed. Predictions changed on {n_changed} of {len(images)} images.")
    known = [(i, classes.index(truth)) for i, (_, _, truth) in enumerate(images) if truth in classes]
    if known:
        rows_, truth_ = torch.tensor([i for i, _ in known]), torch.tensor([c for _, c in known])
        acc = lambda p: float((p[rows_].argmax(-1) == truth_).float().mean())  # noqa: E731
        summary += f" Accuracy on the {len(known)} labelled samples: {acc(before):.2f} before, {acc(after):.2f} after."
    if not changed.any():
        summary += (" No singular vector puts that share of its explanation on these concepts: lower the threshold "
                    "or search the Heads tab for the concept.")
    return summary, pd.DataFrame(rows), fig, gallery


def export_edit(wb: Workbench, suppress: Any, amplify: Any, factor: Any, threshold: Any,
                layers: Any = EDIT.layers, out_dir: str | Path | None = None) -> Path:
    """Write the edited model as a transformers checkpoint and zip it; returns the zip's path.
    The zip is built under a temporary name and renamed, so a failed export leaves no file.

    Example:
        >>> path = export_edit(Workbench("toy"), ["red"], [], 2.0, 0.5, out_dir=".")
        >>> path.name.startswith("edited-"), path.suffix
        (True, '.zip')
    """
    import hashlib

    spec = edit_spec(wb, suppress, amplify, factor, threshold, layers)
    edited, _ = wb.edited(spec)
    out = Path(out_dir) if out_dir is not None else default_download_dir()
    out.mkdir(parents=True, exist_ok=True)
    key = hashlib.blake2b(repr((wb.spec, spec)).encode(), digest_size=6).hexdigest()
    target = out / f"edited-{key}.zip"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        folder = edited.save_pretrained(Path(tmp) / "model")  # a ValueError for OpenCLIP, which has no HF layout
        archive = shutil.make_archive(str(Path(tmp) / "edited"), "zip", root_dir=folder)
        Path(archive).replace(target)
    prune_folder(out, "edited-*.zip", MAX_EXPORTS)
    return target


# -- Compare -----------------------------------------------------------------------------------------
def compare_view(wb: Workbench, source: str, checkpoint: Any, suppress: Any = None, amplify: Any = None,
                 factor: Any = EDIT.factor, threshold: Any = EDIT.threshold, layers: Any = EDIT.layers, top: int = COMPARE.show) -> tuple[str, pd.DataFrame, Any, pd.DataFrame]:
    """Base vs another model: per-layer stability, a layers x heads map of how much each head's
    W_VO moved, and what the largest updates write (SITH of delta W_VO).

    ``source`` is "edit" (the Edit tab's edit of this model) or "checkpoint" (``checkpoint``, a
    model spec such as a fine-tuned folder).

    Example:
        >>> summary, layers, fig, heads = compare_view(Workbench("toy"), "edit", None, ["red"])
        >>> summary[:36]
        '**toy** vs **the edited model**: 12 '
    """
    import plotly.graph_objects as go

    if source == "edit":
        other: Any = edit_spec(wb, suppress, amplify, factor, threshold, layers)
        name = "the edited model"
    elif source == "checkpoint":
        # only the model the server was started with; the field is read-only in the page, and any
        # other value sent through the API is refused by Workbench.comparison without being loaded
        requested = str(checkpoint or "").strip()
        other = wb.finetuned_spec if requested in ("", wb.finetuned_spec) else requested
        name = str(other)
    else:
        raise ValueError(f"compare against 'edit' or 'checkpoint', got {source!r}")
    cmp = wb.comparison(other)
    layers = pd.DataFrame([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in cmp.summary()])
    change = cmp.relative_change.numpy()
    fig = go.Figure(go.Heatmap(z=change, x=[f"H{h}" for h in range(change.shape[1])],
                               y=[f"L{layer}" for layer in cmp.layers], colorscale="Magma",
                               colorbar=dict(title="‖ΔW_VO‖/‖W_VO‖")))
    fig.update_layout(title="Relative change of each head's W_VO", height=340, margin=dict(l=40, r=20, t=50, b=30),
                      yaxis=dict(autorange="reversed"))
    rows = []
    for layer, head, rel in cmp.heads_by_change(top):
        if rel <= 0:
            continue
        update = cmp.delta.head(layer, head).vectors[0] if cmp.delta is not None else None
        p = cmp.layers.index(layer)
        rows.append({"layer": layer, "head": head, "relative change": round(rel, 4),
                     "mean angle (deg)": round(float(cmp.angles[p, head].mean()), 2),
                     "update writes (sv0 of ΔW_VO)": _concept_text(update.concepts) if update else ""})
    moved = int((change > 1e-6).sum())
    summary = (f"**{cmp.base_name}** vs **{name}**: {moved} of {change.size} heads changed; "
               f"largest relative change {float(change.max()):.3f}.")
    if not moved:
        summary += " The two models' vision heads are identical."
    return summary, layers, fig, pd.DataFrame(rows, columns=["layer", "head", "relative change", "mean angle (deg)",
                                                             "update writes (sv0 of ΔW_VO)"])
