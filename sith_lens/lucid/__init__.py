"""LUCID: a unified vision-language sparse autoencoder.

- ``sparse``: block Top-K codes, FVU, AuxK, the unit-norm decoder constraint;
- ``transport``: GCMT, the guided optimal-transport loss between patch and token codes (POT);
- ``terms``: caption tokens as terms, and their transport weights;
- ``data`` / ``collect``: paired activations of a HookedCLIP, stored and served in seeded batches;
- ``store``: the sharded on-disk store for data larger than memory, read through memory maps;
- ``distributed``: the processes that train together under torchrun, and the losses' collectives;
- ``evaluate``: reconstruction, sparsity, dead latents and the pointing game on held-out pairs;
- ``pointing``: the pointing game for any heat map, with chance, word-agnostic and given-object rows;
- ``interpret``: term-clustering labels, top patches, latent and word heat maps;
- ``commands`` / ``release``: ``sith-lens lucid ...`` and the script that rebuilds the packaged SAE;
- ``defaults``: the one set of defaults, the packaged release's recipe;
- ``sae``: the SAELens side (``LucidSAE``, ``LucidView``, ``TrainingLucidSAE``, ``train_lucid``,
  ``load_lucid``, registration), the only part that imports SAELens; ``sith_lens.LucidSAE`` etc. reach it.
"""
