"""Bridges from sith_lens to its host libraries (installed as ``sith_lens.adapters``).

- ``transformer_lens``: HookedCLIPVision / HookedCLIPText, HookedRootModule towers with
  TransformerLens hook names and weight shapes.
- ``hf_clip``: the weight mapping between transformers' ``CLIPModel`` and those towers.
- ``loading``: ``load_clip``, the single entry point that turns a name, a directory or a model
  instance into a ``HookedCLIP``.
"""
