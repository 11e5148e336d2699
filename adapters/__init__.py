"""Bridges from sith_lens to its host libraries (installed as ``sith_lens.adapters``).

- ``transformer_lens``: HookedCLIPVision / HookedCLIPText, HookedRootModule towers with
  TransformerLens hook names and weight shapes; ``components`` holds their blocks and SigLIP's
  attention-pooling head.
- ``weight_maps``: the table machinery (tensor names, einops patterns, fused chunks) that every
  family's weights go through, both ways.
- ``hf_clip``, ``hf_siglip``, ``openclip``: each family's tables and config reader;
  ``families`` registers the transformers ones.
- ``loading``: ``load_clip``, the single entry point that turns a name, a directory or a model
  instance into a ``HookedCLIP``; ``export`` writes one back as a transformers checkpoint.
"""
