"""The Gradio app: four tabs (Heads, Edit, LUCID, Compare) over one ``Workbench``.

The handlers live in ``sith_views`` and ``lucid_views`` as plain functions; this module lays out
the components and wires the events. Every event has an ``api_name``, so the app can be driven
with ``gradio_client`` as well as in a browser.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from . import lucid_views, sith_views  # noqa: E402
from .images import for_display  # noqa: E402
from ..toyworld import VALUES as TOY_VALUES  # noqa: E402
from .workbench import Workbench, prune_folder  # noqa: E402
from ..defaults import DEMO, EDIT  # noqa: E402

#: Requests served at once. Forward passes share one model and take its lock in turn; the queue
#: orders everyone else and shows them their place.
CONCURRENCY = 4
MAX_QUEUE = 64
#: Uploads larger than this are refused by Gradio before they reach a handler.
MAX_UPLOAD = "32mb"
#: Every ``[0]`` seconds, Gradio deletes the uploads and outputs it cached more than ``[1]`` seconds ago.
DELETE_CACHE = (600, 3600)
#: Images the app writes for galleries and previews, kept in its temp folder (oldest removed first,
#: checked every ``PRUNE_EVERY`` new images rather than on each one).
MAX_IMAGE_FILES = 2000
PRUNE_EVERY = 200
_new_images = itertools.count(1)


def _friendly(fn: Callable) -> Callable:
    """Show a handler's ValueError / FileNotFoundError as a Gradio error message (not a crash)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, NotImplementedError) as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def _as_file(image: Any) -> Any:
    """A PIL image as a PNG file in the demo's temp folder, named by its content, written under a
    temporary name and renamed. Gradio 6.31 caches a returned PIL image by rewriting its file in
    place, so two users who get the same image at once can download a truncated file; a path
    goes through Gradio's atomic file cache instead."""
    import hashlib
    import io
    import tempfile

    from .workbench import default_download_dir

    if not hasattr(image, "save"):
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder = default_download_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.blake2b(data, digest_size=12).hexdigest()}.png"
    if not target.is_file():
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
        if next(_new_images) % PRUNE_EVERY == 0:
            prune_folder(folder, "*.png", MAX_IMAGE_FILES)
    return str(target)


def _gallery(items: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    return [(_as_file(image), caption) for image, caption in items]


def build_demo(wb: Workbench) -> gr.Blocks:
    """The explorer app for ``wb``'s model. Nothing heavy runs here: explanations, labels and the
    SAE are built on first use, with a progress bar in the page.

    Example:
        >>> demo = build_demo(Workbench("toy"))
        >>> [tab.label for tab in demo.blocks.values() if type(tab).__name__ == "Tab"]
        ['Heads', 'Edit', 'LUCID', 'Compare']
    """
    cfg = wb.model.vision.cfg
    layers = list(range(cfg.n_layers))
    header = (f"# sith-lens explorer\n`{wb.spec}`: vision tower {cfg.n_layers} layers × {cfg.n_heads} heads "
              f"(d_model {cfg.d_model}), joint space {wb.model.cfg.d_proj}-d; concepts: `{wb.vocab if isinstance(wb.vocab, str) else 'custom list'}`.")
    samples = lucid_views.sample_choices(wb)

    with gr.Blocks(title="sith-lens explorer", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(header)
        with gr.Tabs():
            # -- Heads --------------------------------------------------------------------------
            with gr.Tab("Heads", id="heads"):
                gr.Markdown("What each attention head writes: the SVD of its value-output matrix W_VO, each "
                            "singular vector explained by COMP as a sparse, non-negative mix of concepts.")
                overview = gr.Plot(label="All heads")
                with gr.Row():
                    layer = gr.Dropdown(layers, value=layers[-1], label="layer")
                    head = gr.Dropdown(list(range(cfg.n_heads)), value=0, label="head")
                head_summary = gr.Markdown()
                spectrum = gr.Plot(label="Spectrum")
                vectors = gr.Dataframe(label="Singular vectors and their concepts", interactive=False, wrap=True)
                with gr.Row():
                    query = gr.Textbox(label="Which heads write concept…", placeholder="red", scale=4)
                    search = gr.Button("Search", scale=1)
                search_note = gr.Markdown()
                hits = gr.Dataframe(label="Heads ranked by how much of their spectrum writes the concept (click a row to open it)",
                                    interactive=False)

            # -- Edit ---------------------------------------------------------------------------
            with gr.Tab("Edit", id="edit"):
                gr.Markdown("Suppress or amplify concepts in the weights: every singular vector whose COMP "
                            "explanation puts at least *threshold* of its weight on a chosen concept is zeroed "
                            "(suppress) or scaled by *factor* (amplify). No retraining.")
                with gr.Row():
                    suppress = gr.Dropdown([], value=list(TOY_VALUES["shape"]) if wb.is_toy else [], multiselect=True, allow_custom_value=True, label="suppress")
                    amplify = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="amplify")
                with gr.Row():
                    factor = gr.Slider(-1, 4, value=EDIT.factor, step=0.1, label="amplify factor")
                    threshold = gr.Slider(0.05, 1, value=EDIT.threshold, step=0.05, label="threshold (share of an explanation)")
                    edit_layers = gr.Textbox(EDIT.layers, label="layers ('all', '-4:', '0,3,-1')")
                start = "shape" if wb.is_toy else "color"
                with gr.Row():
                    attribute = gr.Dropdown(list(TOY_VALUES), value=start, label="sample scenes vary in", scale=1,
                                            visible=wb.is_toy)
                    prompts = gr.Textbox(", ".join(sith_views.default_prompts(wb, start)), scale=4,
                                         label="zero-shot classes (comma-separated prompts)")
                if wb.is_toy:
                    gr.Markdown("On the toy CLIP, suppressing the singular vectors SITH explains with shape words "
                                "breaks shape predictions; switch the samples to another attribute (e.g. **color**) "
                                "to see what else the edit moves. How selective each edit is, against random "
                                "vectors and the all-heads ceiling, is in docs/benchmarks.md (the edit benchmark).")
                edit_upload = gr.File(label="your image (optional)", file_count="single")
                with gr.Row():
                    apply = gr.Button("Apply edit", variant="primary")
                    export = gr.Button("Export edited model (.zip)")
                edit_summary = gr.Markdown()
                with gr.Row():
                    bars = gr.Plot(label="Before / after")
                    edit_gallery = gr.Gallery(label="Predictions", columns=6, height=300)
                edit_table = gr.Dataframe(label="Zero-shot predictions before and after", interactive=False)
                download = gr.File(label="edited checkpoint (transformers format)")

            # -- LUCID --------------------------------------------------------------------------
            with gr.Tab("LUCID", id="lucid") as lucid_tab:
                gr.Markdown("Probe the LUCID dictionary: one sparse code space shared by image patches and "
                            "caption tokens. Pick a sample scene or upload an image, and write a caption.")
                with gr.Row():
                    with gr.Column(scale=1):
                        sample = gr.Dropdown(samples, value=samples[0] if samples else None, label="sample scene")
                        lucid_upload = gr.File(label="or upload an image", file_count="single")
                        caption = gr.Textbox(wb.samples()[0][1] if samples else "", label="caption")
                        probe = gr.Button("Probe", variant="primary")
                    preview = gr.Image(label="image", type="filepath", interactive=False, height=256, scale=1)
                lucid_summary = gr.Markdown()
                latents = gr.Dataframe(label="Top shared latents (image and caption)", interactive=False, wrap=True)
                latent_maps = gr.Gallery(label="Latent heat maps over the image", columns=6, height=260)
                tokens = gr.HighlightedText(label="Each token's strongest shared latent", show_legend=False)
                token_table = gr.Dataframe(label="Per-token activations", interactive=False, wrap=True)
                with gr.Row():
                    plan = gr.Plot(label="Transport plan")
                    word_maps = gr.Gallery(label="Per word: where its transport mass lands, and where its shared code "
                                                 "meets the patches'", columns=4, height=420)
                gr.Markdown("### Feature browser")
                with gr.Row():
                    feature = gr.Dropdown([], label="labelled shared latent", allow_custom_value=True, scale=3)
                    show_feature = gr.Button("Show", scale=1)
                feature_summary = gr.Markdown()
                with gr.Row():
                    feature_patches = gr.Gallery(label="Top-activating patches (patch outlined)", columns=8, height=260, scale=3)
                    feature_terms = gr.Dataframe(label="Terms that voted for the label", interactive=False, scale=1)

            # -- Compare ------------------------------------------------------------------------
            with gr.Tab("Compare", id="compare"):
                gr.Markdown("Base vs another version of this model: how far each head's W_VO moved, whether its "
                            "singular basis survived, and what the update writes (SITH of ΔW_VO).")
                with gr.Row():
                    source = gr.Radio(["edit", "checkpoint"] if wb.finetuned_spec else ["edit"],
                                      value="checkpoint" if wb.finetuned_spec else "edit", label="compare with",
                                      info="edit: the Edit tab's settings; checkpoint: the fine-tuned model the "
                                      "explorer was started with")
                    checkpoint = gr.Textbox(wb.finetuned_spec or "none (start the explorer with --finetuned MODEL)",
                                            label="fine-tuned model (--finetuned)", interactive=False)
                run_compare = gr.Button("Compare", variant="primary")
                compare_summary = gr.Markdown()
                change_map = gr.Plot(label="Relative change per head")
                compare_layers = gr.Dataframe(label="Per layer", interactive=False)
                compare_heads = gr.Dataframe(label="Heads that changed most", interactive=False, wrap=True)

        # -- events ---------------------------------------------------------------------------------
        def init(progress: gr.Progress = gr.Progress(track_tqdm=True)):
            result = wb.sith()
            words = sorted(result.concepts)
            fig, table, summary = sith_views.head_view(wb, layers[-1], 0)
            return (sith_views.overview_figure(wb), fig, table, summary,
                    gr.update(choices=words), gr.update(choices=words))

        def show_head(layer_value, head_value):
            return sith_views.head_view(wb, layer_value, head_value)

        def find_heads(text):
            table, note = sith_views.concept_search(wb, text)
            return note, table

        def open_hit(evt: gr.SelectData):
            row = evt.row_value or []
            if len(row) < 2:
                return gr.update(), gr.update()
            return int(row[0]), int(row[1])

        def apply_edit(sup, amp, fac, thr, lay, classes, upload, attr, progress: gr.Progress = gr.Progress(track_tqdm=True)):
            summary, table, fig, gallery = sith_views.edit_view(wb, sup, amp, fac, thr, classes, upload, attr, lay)
            return summary, table, fig, _gallery(gallery)

        def attribute_prompts(attr):
            return ", ".join(sith_views.default_prompts(wb, attr))

        def export_model(sup, amp, fac, thr, lay, progress: gr.Progress = gr.Progress(track_tqdm=True)):
            return str(sith_views.export_edit(wb, sup, amp, fac, thr, lay))

        def pick_sample(choice):
            return lucid_views.pick_image(wb, None, choice)[1]

        def run_probe(upload, choice, text, progress: gr.Progress = gr.Progress(track_tqdm=True)):
            p = lucid_views.lucid_probe(wb, upload, choice, text)
            return (_as_file(for_display(p.image)), p.summary, p.latents, _gallery(p.latent_maps), p.tokens, p.token_table,
                    p.plan_figure, _gallery(p.word_maps), gr.update(choices=lucid_views.feature_choices(wb)))

        def init_features(progress: gr.Progress = gr.Progress(track_tqdm=True)):
            choices = lucid_views.feature_choices(wb)
            if not choices:
                return gr.update(choices=[]), "No shared latent got a label.", [], None
            summary, gallery, terms = lucid_views.feature_view(wb, choices[0])
            return gr.update(choices=choices, value=choices[0]), summary, _gallery(gallery), terms

        def show_latent(choice):
            summary, gallery, terms = lucid_views.feature_view(wb, choice)
            return summary, _gallery(gallery), terms

        def run_comparison(src, ckpt, sup, amp, fac, thr, lay, progress: gr.Progress = gr.Progress(track_tqdm=True)):
            return sith_views.compare_view(wb, src, ckpt, sup, amp, fac, thr, lay)

        head_outputs = [spectrum, vectors, head_summary]
        demo.load(_friendly(init), None, [overview, *head_outputs, suppress, amplify], api_name="init")
        layer.change(_friendly(show_head), [layer, head], head_outputs, api_name="head_view")
        head.change(_friendly(show_head), [layer, head], head_outputs, api_visibility="private")
        search.click(_friendly(find_heads), query, [search_note, hits], api_name="concept_search")
        query.submit(_friendly(find_heads), query, [search_note, hits], api_visibility="private")
        hits.select(open_hit, None, [layer, head], api_visibility="private")  # a click on a row opens that head
        edit_inputs = [suppress, amplify, factor, threshold, edit_layers]
        attribute.change(_friendly(attribute_prompts), attribute, prompts, api_visibility="private")
        apply.click(_friendly(apply_edit), [*edit_inputs, prompts, edit_upload, attribute],
                    [edit_summary, edit_table, bars, edit_gallery], api_name="edit_view")
        export.click(_friendly(export_model), edit_inputs, download, api_name="export_edit")
        sample.change(_friendly(pick_sample), sample, caption, api_visibility="private")
        probe.click(_friendly(run_probe), [lucid_upload, sample, caption],
                    [preview, lucid_summary, latents, latent_maps, tokens, token_table, plan, word_maps, feature],
                    api_name="lucid_probe")
        lucid_tab.select(_friendly(init_features), None, [feature, feature_summary, feature_patches, feature_terms],
                         api_name="init_features")
        show_feature.click(_friendly(show_latent), feature, [feature_summary, feature_patches, feature_terms],
                           api_name="feature_view")
        run_compare.click(_friendly(run_comparison), [source, checkpoint, *edit_inputs],
                          [compare_summary, compare_layers, change_map, compare_heads], api_name="compare_view")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo


def launch(wb: Workbench, host: str = DEMO.host, port: int | None = None, block: bool = True, **kwargs: Any) -> Any:
    """Build and launch the app; returns the launched ``gr.Blocks`` (``block=False`` returns at
    once, for tests and notebooks; ``demo.close()`` stops it).

    Example:
        >>> demo = launch(Workbench("toy"), block=False, quiet=True); demo.local_url.startswith("http://127.0.0.1:")
        True
        >>> demo.close()
        Closing server running on port: ...
    """
    demo = build_demo(wb)
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, show_error=True,
                footer_links=["api", "gradio"], max_file_size=MAX_UPLOAD, **kwargs)
    return demo
