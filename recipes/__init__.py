"""Recipes that build the project's shipped assets; not part of the installed library.

Run them from the repository root (they import ``sith_lens`` and each other):

- ``python -m recipes.toy_clip``: train the toy CLIP (``make toy-clip-base``, ``make toy-clip``);
- ``python -m recipes.finetune_toy``: fine-tune it on the shifted (magenta) world;
- ``python -m recipes.lucid_release``: rebuild the packaged LUCID SAE.
"""
