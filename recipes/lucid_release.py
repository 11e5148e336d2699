"""Rebuild the packaged LUCID release ``sith-lens-toy-lucid`` (the LUCID SAE of the shipped toy CLIP).

    python -m recipes.lucid_release --out sith_lens/assets/lucid_toy

Trains with ``sith-lens lucid train --holdout 0 --out OUT``, whose defaults are the recipe
(``sith_lens.lucid.defaults.DEFAULTS``: toy scenes, seeds, shape, losses, steps), scores the SAE on
held-out scenes from a seed never used in training, and writes ``OUT/final`` (SAELens format, with
``sparsity.safetensors``), ``OUT/record.json`` and ``OUT/README.md`` (the model card).

    python -m recipes.lucid_release --out sith_lens/assets/lucid_toy --card-only

re-scores the release already in ``OUT/final`` and rewrites its card, keeping the training record.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from dataclasses import asdict
from typing import Any

import torch

from sith_lens.atomic import write_text_atomic

#: ``lucid train``'s defaults are the release's recipe (``sith_lens.lucid.defaults``); the release
#: trains on all of its toy scenes.
TRAIN_ARGS = ["--holdout", "0"]


def train_command(out: Path, extra: list[str]) -> list[str]:
    """The ``sith-lens`` arguments that train the release into ``out``."""
    return ["lucid", "train", *TRAIN_ARGS, *extra, "--out", str(out)]


def build(out: Path, extra: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the release into ``out`` with ``sith-lens lucid train`` (the recipe's settings, plus
    ``extra`` options for a quick try), score it on held-out scenes and write its model card."""
    from sae_lens import SAE

    from sith_lens.adapters.loading import load_clip
    from sith_lens.cli import main as cli_main

    from sith_lens.lucid.collect import collect_toy_activations
    from sith_lens.lucid.defaults import DEFAULTS

    extra = list(extra or []) + ([] if progress else ["--no-progress"])
    start = time.perf_counter()
    if cli_main(train_command(out, extra)) != 0:
        raise RuntimeError("sith-lens lucid train failed; see the message above")
    seconds = time.perf_counter() - start
    held_out = collect_toy_activations(load_clip("toy"), DEFAULTS.eval_pairs, seed=DEFAULTS.eval_seed, progress=progress)
    sae = SAE.load_from_disk(out / "final")
    record = {
        "command": "python -m recipes.lucid_release --out " + str(out),
        "train_command": "sith-lens " + " ".join(train_command(out, extra)),
        "recipe": asdict(DEFAULTS), "extra_options": extra,
        "minutes": round(seconds / 60, 1), "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "on_training_pairs": training_figures(sae.cfg.metadata),
        "held_out": held_out_scores(sae, held_out),
    }
    write_text_atomic(out / "record.json", json.dumps(record, indent=2) + "\n")
    write_text_atomic(out / "README.md", model_card(record))
    return record


def training_figures(metadata: Any) -> dict[str, Any]:
    """What ``train_lucid`` measured on the training pairs (variance explained, L0 per modality)."""
    keys = [f"{k}_{m}" for k in ("variance_explained", "l0") for m in ("vision", "text")] + ["measured_on"]
    return {k: metadata.get(k) for k in keys}


def held_out_scores(sae: Any, held_out: Any) -> dict[str, Any]:
    """Reconstruction, the pointing game, and the pointing game's word-agnostic baselines on ``held_out``."""
    from sith_lens.lucid.evaluate import pointing_game, reconstruction_report
    from sith_lens.lucid.pointing import pointing_maps, pointing_table

    words, heats = pointing_maps({"release": sae}, held_out, code_norm_of="release")
    table = pointing_table(words, heats, "release", ["background_distance", "release_code_norm"])
    return {**reconstruction_report(sae, held_out), **pointing_game(sae, held_out),
            "pointing_baselines": {
                "background_distance": round(table.rates["background_distance"]["all"].value, 4),
                "release_code_norm": round(table.rates["release_code_norm"]["all"].value, 4),
                "chance_random_object": round(table.rates["chance_random_object"]["all"].value, 4),
                "margin_vs_word_agnostic": table.evidence.to_json()["margin"],
                "given_object_2obj": round(table.given_object["release"][2].value, 4),
                "given_object_3obj": round(table.given_object["release"][3].value, 4)}}


def rescore(out: Path) -> dict[str, Any]:
    """Re-score the release in ``out/final`` on its held-out scenes and rewrite its card."""
    from sae_lens import SAE

    from sith_lens.adapters.loading import load_clip

    from sith_lens.lucid.collect import collect_toy_activations

    path = out / "record.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild the release without --card-only")
    record = json.loads(path.read_text())
    recipe = record["recipe"]
    held_out = collect_toy_activations(load_clip("toy"), recipe["eval_pairs"], seed=recipe["eval_seed"], progress=False)
    record["held_out"] = held_out_scores(SAE.load_from_disk(out / "final"), held_out)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    write_text_atomic(out / "README.md", model_card(record))
    return record


def model_card(record: dict[str, Any]) -> str:
    """The release's README."""
    r = record["recipe"]
    held = record["held_out"]
    quick = f" (with {' '.join(record['extra_options'])})" if record.get("extra_options") else ""
    return f"""# sith-lens-toy-lucid

The LUCID SAE of the shipped toy CLIP (`load_clip("toy")`), in SAELens format.

```python
import sith_lens
from sae_lens import SAE
sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")            # LucidSAE: sae.vision, sae.text
vision = SAE.from_pretrained("sith-lens-toy-lucid", "final/vision")  # one view, an ordinary SAELens SAE
```

- Inputs: every patch and every caption token in the joint space (`hook_joint_tokens`), 128 wide.
- Latents: {r["d_sae"]} in all: {r["d_sae"] - 2 * r["n_private"]} shared, {r["n_private"]} vision-private,
  {r["n_private"]} text-private. Top-K {r["k_shared"]} shared + {r["k_private"]} private per token.
- Training: {r["toy_pairs"]} toy scenes (seed {r["toy_seed"]}), {r["steps"]} steps of {r["batch_size"]} pairs,
  lr {r["lr"]}, GCMT weight {r["ot_coefficient"]}, seed {r["seed"]}{quick}; {record["minutes"]} min on {record["machine"]}.
  Every setting is in `record.json` (`recipe`: `sith_lens.lucid.defaults.DEFAULTS`).
- Rebuild: `{record["command"]}`, which runs `{record["train_command"]}`.
- `final/sparsity.safetensors`: log10 firing density of every latent on the training pairs
  (`sparsity`: patch and token rows together; `sparsity_vision`, `sparsity_text`).
{_training_line(record.get("on_training_pairs"))}

## Held-out scores ({r["eval_pairs"]} scenes, seed {r["eval_seed"]})
{_pointing_caveat(held)}
```json
{json.dumps(held, indent=2)}
```
"""


def _training_line(figures: dict[str, Any] | None) -> str:
    if not figures or figures.get("variance_explained_vision") is None:
        return ""
    return (f"- On {figures['measured_on']} (in `final/cfg.json` and SAELens's directory): variance explained "
            f"{figures['variance_explained_vision']} (patches) and {figures['variance_explained_text']} (words), "
            f"L0 {figures['l0_vision']} and {figures['l0_text']}.")


def _pointing_caveat(held: dict[str, Any]) -> str:
    base = held.get("pointing_baselines")
    if not base:
        return ""
    margin = base["margin_vs_word_agnostic"]
    if margin["ci95"][0] > 0:
        verdict = "The heat maps ground words beyond saliency: the margin's interval lies above zero."
    else:
        verdict = "The heat maps show salient objects; they are not shown to ground words beyond that."
    return f"""
Read the pointing game against its baselines: a heat map that ignores the word (each patch's
distance from the mean background patch) scores {base["background_distance"]}, the release's own
code norm {base["release_code_norm"]}; the margin over the better of them is {margin["value"]}
(95 % interval {margin["ci95"]}). Among peaks on an object, the named object is hit at
{base["given_object_2obj"]} on two-object scenes and {base["given_object_3obj"]} on three (chance
0.5 and 0.33). {verdict} (README, "LUCID benchmark").
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sith_lens/assets/lucid_toy", help="release folder")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps (for a quick try)")
    parser.add_argument("--card-only", action="store_true", help="re-score the release in OUT/final and rewrite its card")
    args = parser.parse_args(argv)
    if args.card_only:
        record = rescore(Path(args.out))
    else:
        record = build(Path(args.out), ["--steps", str(args.steps)] if args.steps else [])
    print(json.dumps(record["held_out"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
