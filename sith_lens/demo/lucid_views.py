"""What the LUCID tab shows, as plain data: probing an image and a caption, and browsing features.

Every function takes the ``Workbench`` and the raw widget values, checks them, and raises
``ValueError`` with the fix when they are wrong (the UI shows it as a Gradio error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from PIL import Image

from .images import load_image, model_view, overlay, patch_crop
from .workbench import Workbench

#: Words of a caption shown as maps (each as its transport plan and its shared-code heat map).
MAX_WORD_MAPS = 8


@dataclass
class Probe:
    """Everything the LUCID tab shows for one image and caption."""

    image: Image.Image
    summary: str
    latents: pd.DataFrame
    latent_maps: list[tuple[Image.Image, str]]
    tokens: list[tuple[str, str | None]]
    token_table: pd.DataFrame
    plan_figure: Any
    word_maps: list[tuple[Image.Image, str]]


def choice_number(value: Any) -> int | None:
    """The number a dropdown choice starts with ("3: a red circle" -> 3, 17 -> 17), None if none."""
    try:
        return int(str(value).split(":", 1)[0])
    except ValueError:
        return None


def pick_image(wb: Workbench, upload: Any, sample: Any) -> tuple[Image.Image, str | None]:
    """The uploaded image if there is one, else the chosen sample (an index, or a dropdown label
    "3: caption"); returns the image and the sample's caption (None for an upload)."""
    if upload is not None and upload != "":
        return load_image(upload), None
    samples = wb.samples()
    if not samples:
        raise ValueError("upload an image (this model has no sample scenes)")
    if sample is None or sample == "":
        raise ValueError("upload an image or pick a sample scene")
    index = choice_number(sample)
    if index is None:
        raise ValueError(f"unknown sample {sample!r}; pick one from the list")
    if not 0 <= index < len(samples):
        raise ValueError(f"sample {index} does not exist; there are {len(samples)} samples")
    return samples[index]


def sample_choices(wb: Workbench) -> list[str]:
    """Dropdown labels of the sample scenes: "index: caption"."""
    return [f"{i}: {caption}" for i, (_, caption) in enumerate(wb.samples())]


def _label(report: Any, latent: int) -> str:
    entry = report.label_of(latent) if report is not None else None
    if entry is None or entry.label is None:
        return "(unlabelled)"
    return f"{entry.label} ({entry.category})"


@torch.no_grad()
def lucid_probe(wb: Workbench, upload: Any, sample: Any, caption: Any, n_latents: int = 6) -> Probe:
    """Encode an image's patches and a caption's tokens with the LUCID SAE: the shared latents
    both fire on (with their labels and patch heat maps), each token's strongest latents, and the
    transport plan between patches and words.

    Example:
        >>> probe = lucid_probe(Workbench("toy"), None, 0, "a red circle")
        >>> probe.latents.shape
        (6, 6)
    """
    import plotly.graph_objects as go

    from sith_lens.lucid.collect import collect_pairs
    from sith_lens.lucid.evaluate import n_shared, word_heatmaps
    from sith_lens.lucid.sparse import fvu
    from sith_lens.lucid.transport import config_from_details, pair_plan

    image, sample_caption = pick_image(wb, upload, sample)
    image = model_view(image, wb.model.image_processor)  # what the patch grid covers
    if caption is None or not str(caption).strip():
        raise ValueError("the caption is empty: type a sentence about the image, e.g. a red circle")
    caption = str(caption).strip()
    sae = wb.sae()
    corpus = wb.lucid_corpus()
    report = corpus.report
    vision_hook, text_hook = wb.hooks()
    with wb.lock:
        pixels = wb.model.preprocess([image])
        acts = collect_pairs(wb.model, [pixels], [[caption]], 1, vision_hook, text_hook, progress=False)
    keep = acts.token_mask[0]
    tokens = [t for t, k in zip(acts.token_strings[0], keep.tolist()) if k]
    patch_x, token_x, weights = acts.patches[0].float(), acts.tokens[0][keep].float(), acts.token_weights[0][keep]
    s, grid = n_shared(sae), acts.grid
    zp = sae.vision.encode(patch_x)[:, :s]  # [N, s]
    zt = sae.text.encode(token_x)[:, :s]  # [L, s]

    # latents shared by the image and the caption first, then the image's strongest others
    img_peak, txt_peak = zp.max(0).values, zt.max(0).values
    both = img_peak * txt_peak
    order = [int(i) for i in both.argsort(descending=True) if both[i] > 0][:n_latents]
    order += [int(i) for i in img_peak.argsort(descending=True) if int(i) not in order and img_peak[i] > 0][: n_latents - len(order)]
    vmax = float(zp.max()) or 1.0
    rows, maps = [], []
    for latent in order:
        fires_on = [t for t, v in zip(tokens, zt[:, latent].tolist()) if v > 0]
        entry, label = report.label_of(latent), _label(report, latent)
        rows.append({"latent": latent, "label": label,
                     "purity": round(entry.purity, 3) if entry is not None else None,
                     "image peak": round(float(img_peak[latent]), 3), "caption peak": round(float(txt_peak[latent]), 3),
                     "words": " ".join(fires_on)})
        maps.append((overlay(image, zp[:, latent].reshape(grid, grid).numpy(), vmax=vmax),
                     f"#{latent} {label}"))

    highlighted, token_rows = [], []
    for i, tok in enumerate(tokens):
        top = zt[i].topk(min(3, s))
        best = int(top.indices[0]) if float(top.values[0]) > 0 else None
        highlighted.append((tok + " ", _label(report, best) if best is not None else None))
        token_rows.append({"token": tok, "OT weight": round(float(weights[i]), 2),
                           "top shared latents": ", ".join(f"#{int(j)} {_label(report, int(j))} {float(v):.2f}"
                                                           for v, j in zip(top.values, top.indices) if v > 0)})

    cfg = config_from_details(getattr(sae.cfg.metadata, "training_architecture_details", None))
    content = weights > 0
    plan = torch.zeros(len(zp), len(tokens))
    if bool(content.any()):
        plan[:, content] = pair_plan(zp, zt[content], weights[content], grid, cfg, patch_x, token_x[content])
    share = plan / plan.sum(0, keepdim=True).clamp_min(1e-12)  # each word's mass over patches
    fig = go.Figure(go.Heatmap(z=share.numpy(), x=[f"{i}:{t}" for i, t in enumerate(tokens)],
                               y=[f"r{p // grid} c{p % grid}" for p in range(len(zp))], colorscale="Inferno",
                               colorbar=dict(title="share")))
    fig.update_layout(title="Transport plan: where each word's mass goes (patches × words)", height=420,
                      margin=dict(l=60, r=20, t=50, b=60), yaxis=dict(autorange="reversed"))
    # per word, side by side: where its transport mass lands, and where its shared code meets the
    # patches' (the heat map the pointing game scores): the target and what the codes learned of it
    codes = word_heatmaps(zp[None], zt[None])[0].T  # [N, L]
    word_maps = []
    # content words first (function words carry a tenth of the mass), in caption order
    for i in sorted((i for i in range(len(tokens)) if content[i]), key=lambda i: (-float(weights[i]), i))[:MAX_WORD_MAPS]:
        word_maps.append((overlay(image, share[:, i].reshape(grid, grid).numpy()), f"{tokens[i]}: transport plan"))
        word_maps.append((overlay(image, codes[:, i].reshape(grid, grid).numpy()), f"{tokens[i]}: shared codes"))

    shared_count = int((both > 0).sum())
    caption_fvu = f"{float(fvu(token_x, sae.text(token_x))):.3f}" if len(tokens) > 1 else "n/a (one token)"
    summary = (f"{len(zp)} patches ({grid}×{grid}) and {len(tokens)} tokens. **{shared_count}** shared latents fire on "
               f"both the image and the caption. Reconstruction FVU: image {float(fvu(patch_x, sae.vision(patch_x))):.3f}, "
               f"caption {caption_fvu}. "
               f"Labels from {len(corpus.images)} captioned images.")
    if sample_caption is not None and caption != sample_caption:
        summary += f" The sample's own caption is: *{sample_caption}*."
    return Probe(image, summary, pd.DataFrame(rows, columns=["latent", "label", "purity", "image peak", "caption peak", "words"]),
                 maps, highlighted, pd.DataFrame(token_rows), fig, word_maps)


#: Latents that fire on fewer than this share of patches or of tokens are left out of the browser's
#: list (a latent seen a handful of times gets a "pure" label from one word).
MIN_FREQUENCY = 0.001


def feature_choices(wb: Workbench) -> list[str]:
    """Dropdown labels of the labelled shared latents that fire on both modalities, purest first:
    "17: red (color, 0.92)"."""
    labels = [e for e in wb.lucid_corpus().report.labels
              if e.label is not None and min(e.patch_frequency, e.token_frequency) >= MIN_FREQUENCY]
    labels.sort(key=lambda e: (-e.purity, -sum(e.terms.values()), e.latent))
    return [f"{e.latent}: {e.label} ({e.category}, {e.purity:.2f})" for e in labels]


def feature_view(wb: Workbench, latent: Any, n_patches: int = 16) -> tuple[str, list[tuple[Image.Image, str]], pd.DataFrame]:
    """One shared latent: its label and term cluster, its top-activating patches (with context,
    the patch outlined) and the terms that voted for its label.

    Example:
        >>> summary, patches, terms = feature_view(Workbench("toy"), 17)
    """
    corpus = wb.lucid_corpus()
    from sith_lens.lucid.evaluate import n_shared

    s = n_shared(wb.sae())
    latent = choice_number(latent)
    if latent is None or not 0 <= latent < s:
        raise ValueError(f"pick a shared latent, a whole number in [0, {s}); the dropdown lists the labelled ones")
    entry = corpus.report.label_of(latent)
    grid = corpus.acts.grid
    gallery = []
    for image_index, row, col, value in (entry.top_patches if entry is not None else [])[:n_patches]:
        image = model_view(corpus.image(image_index), wb.model.image_processor)
        gallery.append((patch_crop(image, row, col, grid), f"image {image_index} ({row},{col}) {value:.2f}"))
    if entry is None:
        return f"Latent {latent} has no record in the label report.", gallery, pd.DataFrame(columns=["term", "weight"])
    label = f"**{entry.label}** ({entry.category})" if entry.label else "no label (its terms do not agree, or it never fires on text)"
    summary = (f"Latent **{latent}**: {label}; purity {entry.purity:.2f}; cluster: {', '.join(entry.cluster or []) or '-'}. "
               f"Fires on {entry.patch_frequency:.1%} of patches and {entry.token_frequency:.1%} of tokens.")
    if not gallery:
        summary += " It never fires on the corpus's patches."
    terms = pd.DataFrame([{"term": t, "weight": w} for t, w in (entry.terms or {}).items()], columns=["term", "weight"])
    return summary, gallery, terms
