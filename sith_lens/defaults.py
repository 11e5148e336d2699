"""One set of defaults per workflow, read by the API, the command line, the explorer and the benchmarks.

- ``EXPLAIN``: SITH (``explain_heads``, ``sith-lens explain``, the explorer's Heads tab);
- ``EDIT``: weight edits (``concept_multipliers``, ``sith-lens edit``, the Edit tab);
- ``COMPARE``: base vs fine-tuned (``compare``, ``sith-lens compare``, the Compare tab);
- ``DEMO``: the explorer (``sith-lens demo``, ``launch``);
- LUCID training has its own, ``sith_lens.lucid.defaults.DEFAULTS`` (the packaged release's recipe).

Change a default here and every front end follows. The module imports nothing heavy, so the
command line can show the defaults without loading torch. The numbers for SITH are the paper's
(sith_spec §4: COMP with k = 5, lambda = 0.3); the others are our choices.

Example:
    >>> EXPLAIN.k, EXPLAIN.lam, EXPLAIN.method
    (5, 0.3, 'comp')
    >>> EDIT.layers, default_vocabulary("toy"), default_vocabulary("openai/clip-vit-base-patch32")
    ('-4:', 'toy', 'english')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExplainDefaults:
    """SITH's settings: the pursuit and what the command writes."""

    k: int = 5
    """Concepts per singular vector."""
    lam: float = 0.3
    """COMP's coherence weight."""
    method: str = "comp"
    """The pursuit (a name in ``sith_lens.pursuit.METHODS``)."""
    side: str = "right"
    """``"right"``: what heads write; ``"left"``: what they read."""
    centering: str = "auto"
    """Image-side centring of the read-out (``"auto"``: the model's saved image mean if any)."""
    layers: str = "all"
    """Layers explained, in ``parse_layers`` syntax."""
    report_vectors: int = 16
    """Singular vectors per head in the HTML report."""
    out: str = "sith-out"
    """The command's output folder."""


@dataclass(frozen=True)
class EditDefaults:
    """Settings of a concept edit."""

    layers: str = "-4:"
    """Edited layers: the last four, where SITH finds the concept-writing heads."""
    threshold: float = 0.5
    """A singular vector is edited when this share of its explanation is on the query concepts."""
    factor: float = 2.0
    """The multiplier of an amplified vector (-1 flips it)."""


@dataclass(frozen=True)
class CompareDefaults:
    """Settings of a base vs fine-tuned comparison."""

    layers: str = "all"
    top: int = 8
    """Leading singular vectors compared per head."""
    delta_vectors: int = 4
    """Singular vectors of each head's update that are explained."""
    k: int = ExplainDefaults.k
    """Concepts per explained vector."""
    show: int = 8
    """Heads the command prints."""


@dataclass(frozen=True)
class DemoDefaults:
    """Settings of the explorer."""

    model: str = "toy"
    host: str = "127.0.0.1"
    """This machine only; serving elsewhere is a deliberate choice. The port is Gradio's choice:
    7860, or the next free one."""


EXPLAIN = ExplainDefaults()
EDIT = EditDefaults()
COMPARE = CompareDefaults()
DEMO = DemoDefaults()


def default_vocabulary(model: object) -> str:
    """The concept vocabulary for a model spec: ``"toy"`` for the toy CLIP, ``"english"`` otherwise.

    Example:
        >>> default_vocabulary("toy"), default_vocabulary("random:tiny")
        ('toy', 'english')
    """
    return "toy" if model == "toy" else "english"
