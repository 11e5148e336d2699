"""The demo's model and its heavy results, each computed once and shared by every user.

A ``Workbench`` holds one loaded ``HookedCLIP`` and lazily builds what the tabs need: the concept
dictionary, the SITH explanation of every head, the LUCID SAE with its labels and the image corpus
they were computed on, edited models and comparisons. Builds and forward passes run under one
lock, so ten users who open the LUCID tab at once trigger one build; built results are then read
without locking. Comparisons read weights only and run outside that lock, under their own.

The Compare tab compares only with what the server was started with (``finetuned``) and with the
Edit tab's edits: a client cannot make the server load, or probe for, any other path or model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from PIL import Image

from sith_lens.defaults import DEMO, EDIT, EXPLAIN, default_vocabulary

T = TypeVar("T")

#: Edited models kept in memory (a toy model is 8 MB, a ViT-B/32 600 MB), and comparisons.
MAX_EDITED = 4
#: Zero-shot predictions of the sample images kept (per model, attribute and prompt list).
MAX_PREDICTIONS = 64
#: Scenes the toy LUCID labels are computed on (a world seed never used to train the release).
TOY_LABEL_SCENES = 512
TOY_LABEL_SEED = 7
#: Sample scenes offered in the Edit and LUCID tabs (toy model).
TOY_SAMPLE_SEED = 11
N_SAMPLES = 12
#: One-object scenes the Edit tab classifies (toy model).
N_EDIT_SAMPLES = 16


@dataclass
class LucidCorpus:
    """The images a LUCID SAE was labelled on, their activations and the labels."""

    #: Toy scenes in memory, or the files of a captions JSONL (opened when shown).
    images: list[Image.Image | Path]
    acts: Any  # PairedActivations
    report: Any  # LucidReport

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as RGB (a file is read now, through the demo's upload checks)."""
        from .images import load_image

        item = self.images[index]
        return item if isinstance(item, Image.Image) else load_image(item)


@dataclass(frozen=True)
class EditSpec:
    """What an edit does; the key of the edited-model cache."""

    suppress: tuple[str, ...] = ()
    amplify: tuple[str, ...] = ()
    factor: float = EDIT.factor
    threshold: float = EDIT.threshold
    #: Edited layers (absolute indices); the explorer and the CLI default to ``EDIT.layers``.
    layers: tuple[int, ...] | None = None


class Workbench:
    """One model and its cached analyses.

    Args:
        model: a model spec for ``load_clip`` ("toy", a Hugging Face id, a folder) or a HookedCLIP.
        vocab: concept vocabulary for SITH ("toy", "english", a file, or a list); default "toy"
            for the toy model and "english" otherwise.
        sae: a LUCID SAE folder; default the packaged toy release for the toy model, none otherwise.
        lucid_data: a captions JSONL (``sith-lens lucid collect`` format) whose images label the SAE's
            latents; the toy model uses toy-world scenes.
        finetuned: a model spec offered in the Compare tab.

    Example:
        >>> wb = Workbench("toy")
        >>> wb.sith().head(-1, 0).layer
        5
    """

    def __init__(self, model: Any = DEMO.model, *, vocab: Any = None, sae: str | None = None,
                 lucid_data: str | None = None, finetuned: str | None = None, k: int = EXPLAIN.k,
                 lam: float = EXPLAIN.lam) -> None:
        from sith_lens.adapters.loading import load_clip

        self.spec = model if isinstance(model, str) else getattr(getattr(model, "cfg", None), "model_name", "model")
        self.model = load_clip(model) if isinstance(model, str) else model
        self.is_toy = self.spec == "toy"
        self.vocab = vocab if vocab is not None else default_vocabulary(self.spec)
        self.sae_path = sae
        self.lucid_data = lucid_data
        self.finetuned_spec = finetuned
        self.k, self.lam = k, lam
        #: Held while a result is built and around forward passes: TransformerLens adds and removes
        #: hooks on the shared model, which two threads must not interleave. One lock, so that no
        #: two locks can be taken in opposite orders.
        self.lock = threading.RLock()
        self._cache: dict[Any, Any] = {}
        self._edited: OrderedDict[EditSpec, Any] = OrderedDict()
        #: Held while a comparison is built (weights only: no forward pass, so not ``lock``).
        self.compare_lock = threading.Lock()
        self._comparisons: OrderedDict[Any, Any] = OrderedDict()
        self._predictions: OrderedDict[Any, Any] = OrderedDict()
        if finetuned is not None:  # a bad --finetuned fails at start-up, not in a user's request
            from sith_lens.compare import check_same_shape

            check_same_shape(self.model, self.finetuned())

    def _once(self, key: Any, build: Callable[[], T]) -> T:
        if key in self._cache:
            return self._cache[key]
        with self.lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    # -- SITH -----------------------------------------------------------------------------------------
    def concepts(self) -> Any:
        """The concept dictionary (encoded once, cached on disk by ``ConceptDictionary``)."""
        from sith_lens.concepts import ConceptDictionary

        return self._once("concepts", lambda: ConceptDictionary.from_vocab(self.model, self.vocab))

    def sith(self) -> Any:
        """The SITH explanation of every head of every layer."""
        from sith_lens.sith import explain_heads

        return self._once("sith", lambda: explain_heads(self.model, self.concepts(), None, k=self.k, lam=self.lam))

    # -- samples --------------------------------------------------------------------------------------
    def samples(self) -> list[tuple[Image.Image, str]]:
        """Sample images with a caption: toy-world scenes for the toy model, none otherwise."""

        def build() -> list[tuple[Image.Image, str]]:
            if not self.is_toy:
                return []
            from sith_lens.toyworld import ToyWorld

            cfg = self.model.vision.cfg
            batch = ToyWorld(seed=TOY_SAMPLE_SEED, image_size=cfg.image_size, patch_size=cfg.patch_size).batch(0, N_SAMPLES)
            return [(Image.fromarray(im), text) for im, text in zip(batch.images, batch.texts)]

        return self._once("samples", build)

    def edit_samples(self, attribute: str = "color") -> list[tuple[Image.Image, str | None]]:
        """Images the Edit tab classifies, with their true zero-shot prompt when known: about
        ``N_EDIT_SAMPLES`` one-object toy scenes covering every value of ``attribute`` for the toy
        model; none otherwise."""

        def build() -> list[tuple[Image.Image, str | None]]:
            if not self.is_toy:
                return []
            from sith_lens.toyworld import VALUES, ToyWorld

            if attribute not in VALUES:
                raise ValueError(f"unknown attribute {attribute!r}; pick one of {', '.join(VALUES)}")
            cfg = self.model.vision.cfg
            world = ToyWorld(seed=TOY_SAMPLE_SEED, image_size=cfg.image_size, patch_size=cfg.patch_size)
            scenes = world.attribute_set(attribute, per_value=max(1, N_EDIT_SAMPLES // len(VALUES[attribute])))
            return [(Image.fromarray(im), scenes.prompts[v]) for im, v in zip(scenes.batch.images, scenes.labels)]

        return self._once(("edit_samples", attribute), build)

    # -- edits ----------------------------------------------------------------------------------------
    def edited(self, spec: EditSpec) -> tuple[Any, Any]:
        """The model edited by ``spec`` and its multipliers ``[n_layers, n_heads, rank]`` (cached,
        the last ``MAX_EDITED``)."""
        from sith_lens.edit import edit_heads, query_multipliers

        with self.lock:
            if spec in self._edited:
                self._edited.move_to_end(spec)
                return self._edited[spec]
            result = self.sith()
            m = query_multipliers(result, spec.suppress, spec.amplify, factor=spec.factor, threshold=spec.threshold,
                                  layers=spec.layers)
            return _remember(self._edited, spec, (edit_heads(self.model, result, m), m), MAX_EDITED)

    # -- compare --------------------------------------------------------------------------------------
    def comparison(self, other: str | EditSpec) -> Any:
        """``compare(base, other)`` where ``other`` is an edit of this model or the ``finetuned``
        spec the workbench was created with (any other model is refused, without loading it).
        The last ``MAX_EDITED`` comparisons are kept."""
        from sith_lens.compare import compare

        if not isinstance(other, EditSpec) and (self.finetuned_spec is None or other != self.finetuned_spec):
            raise ValueError("this explorer compares only with the Edit tab's edits and with the fine-tuned model "
                             "it was started with (`sith-lens demo --finetuned MODEL`)"
                             + ("" if self.finetuned_spec is None else f", here {self.finetuned_spec!r}"))
        if other in self._comparisons:
            return self._comparisons[other]
        concepts = self.concepts()
        with self.compare_lock:
            if other in self._comparisons:
                return self._comparisons[other]
            tuned = self.edited(other)[0] if isinstance(other, EditSpec) else self.finetuned()
            cmp = compare(self.model, tuned, concepts, None, k=self.k, lam=self.lam)
            return _remember(self._comparisons, other, cmp, MAX_EDITED)

    def finetuned(self) -> Any:
        """The ``finetuned`` model, loaded once (outside the forward-pass lock)."""
        from sith_lens.adapters.loading import load_clip

        if self.finetuned_spec is None:
            raise ValueError("no fine-tuned model: start the explorer with --finetuned MODEL")
        if "finetuned" not in self._cache:
            self._cache["finetuned"] = load_clip(self.finetuned_spec)
        return self._cache["finetuned"]

    # -- predictions ----------------------------------------------------------------------------------
    def sample_predictions(self, key: Any, predict: Callable[[], T]) -> T:
        """``predict()`` (zero-shot probabilities of the sample images), cached under ``key`` for the
        last ``MAX_PREDICTIONS`` keys: the samples are fixed, so the same edit and prompts give the
        same answer for every user."""
        with self.lock:
            if key in self._predictions:
                self._predictions.move_to_end(key)
                return self._predictions[key]
            return _remember(self._predictions, key, predict(), MAX_PREDICTIONS)

    # -- LUCID ----------------------------------------------------------------------------------------
    def sae(self) -> Any:
        """The LUCID SAE: ``--sae`` if given, the packaged toy release for the toy model."""

        def build() -> Any:
            if self.sae_path:
                from sith_lens.lucid.sae import load_lucid

                sae = load_lucid(self.sae_path)
                if sae.cfg.architecture() != "lucid":
                    raise ValueError(f"--sae {self.sae_path} holds one LUCID view ({sae.cfg.modality}); the explorer "
                                     "needs the two-modality SAE (OUT/final of `sith-lens lucid train`)")
            elif self.is_toy:
                from sae_lens import SAE

                import sith_lens.lucid.sae  # noqa: F401  registers "lucid" and the release

                sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
            else:
                raise ValueError(f"no LUCID SAE for {self.spec!r}: train one with `sith-lens lucid train` "
                                 "and start the demo with --sae FOLDER")
            d_model = self.model.cfg.d_proj
            if sae.cfg.d_in != d_model and sae.cfg.metadata.hook_name_vision == "hook_joint_tokens":
                raise ValueError(f"the LUCID SAE reads {sae.cfg.d_in}-d activations but {self.spec!r} has a "
                                 f"{d_model}-d joint space; pass an SAE trained on this model (--sae)")
            return sae.eval()

        return self._once("sae", build)

    def hooks(self) -> tuple[str, str]:
        """The vision and text hooks the SAE reads."""
        meta = self.sae().cfg.metadata
        return meta.hook_name_vision, meta.hook_name_text

    def lucid_corpus(self) -> LucidCorpus:
        """Images with captions, their activations, and the SAE's latent labels computed on them."""

        def build() -> LucidCorpus:
            from sith_lens.lucid.collect import collect_folder_activations, collect_pairs, read_captions_jsonl
            from sith_lens.lucid.interpret import label_latents

            sae = self.sae()
            vision_hook, text_hook = self.hooks()
            if self.lucid_data:
                acts = collect_folder_activations(self.model, self.lucid_data, vision_hook=vision_hook,
                                                  text_hook=text_hook)
                images = read_captions_jsonl(self.lucid_data)[0]
            elif self.is_toy:
                from sith_lens.toyworld import ToyWorld

                cfg = self.model.vision.cfg
                world = ToyWorld(seed=TOY_LABEL_SEED, image_size=cfg.image_size, patch_size=cfg.patch_size)
                batches = [world.batch(i, 64) for i in range(TOY_LABEL_SCENES // 64)]
                acts = collect_pairs(self.model, (b.pixels for b in batches), (b.texts for b in batches),
                                     len(batches), vision_hook, text_hook)
                images = [Image.fromarray(im) for b in batches for im in b.images]
            else:
                raise ValueError("LUCID labels need captioned images: start the demo with "
                                 "--lucid-data captions.jsonl (one {\"image\": ..., \"caption\": ...} per line)")
            report = label_latents(sae, acts, self.model, progress=True)
            return LucidCorpus(images, acts, report)

        return self._once("lucid_corpus", build)


def _remember(store: OrderedDict, key: Any, value: T, limit: int) -> T:
    """Put ``value`` under ``key`` in the LRU ``store`` and drop the oldest entries beyond ``limit``."""
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)
    return value


def default_download_dir() -> Path:
    """Where exported models go: a folder in the system's temp directory, which Gradio serves."""
    import tempfile

    return Path(tempfile.gettempdir()) / "sith-lens-demo"


def prune_folder(folder: Path, pattern: str, keep: int) -> int:
    """Delete all but the ``keep`` most recently modified files matching ``pattern`` in ``folder``;
    returns how many were deleted (files another process removed first are skipped).

    Example:
        >>> prune_folder(default_download_dir(), "edited-*.zip", keep=8)
        0
    """
    files = []
    for file in folder.glob(pattern):
        try:
            files.append((file.stat().st_mtime, file))
        except OSError:
            pass
    files.sort(reverse=True)
    removed = 0
    for _, file in files[keep:]:
        try:
            file.unlink()
            removed += 1
        except OSError:
            pass
    return removed
