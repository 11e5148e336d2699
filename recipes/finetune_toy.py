"""Fine-tune a toy CLIP on a shifted world, to study what fine-tuning changes.

The shift: purple objects are drawn magenta (RGB 255, 0, 255) and every caption calls them
"magenta", a word that is in the tokenizer but never appeared in pre-training. Both towers train by
default, so the text tower learns the new word and a dictionary encoded by the fine-tuned model can
name it (with a frozen text tower every untrained word sits in one cluster of near-identical
embeddings, so no explanation could single it out). ``--train vision`` or ``--train vo`` (only the
vision attention's value and output projections) restrict what moves.
``sith_lens.compare(base, finetuned)`` then measures whether each head's singular basis stayed
stable and what the weight update writes.

    python -m recipes.finetune_toy --out toy-magenta --steps 300
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sith_lens.toyworld.data import ToyWorld
from recipes.toy_clip import batch_truth, contrastive_loss, world_image_mean

#: Which parameters each ``FinetuneConfig.train`` setting trains (by transformers name).
TRAINABLE = {
    "vision": lambda n: n.startswith(("vision_model.", "visual_projection")),
    "vo": lambda n: n.startswith("vision_model.") and (".v_proj." in n or ".out_proj." in n),
    "all": lambda n: True,
}
#: World seed offset, so that fine-tuning never sees a pre-training batch.
SEED_OFFSET = 10_000


@dataclass
class FinetuneConfig:
    """Everything that determines a fine-tuning run."""

    #: Base checkpoint: "toy" (the shipped toy CLIP) or a checkpoint folder.
    base: str = "toy"
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0
    #: Caption words replaced during fine-tuning ("old=new,...").
    rename: dict[str, str] = field(default_factory=lambda: {"purple": "magenta"})
    #: Colours drawn with a new RGB during fine-tuning ("purple" objects become magenta).
    recolor: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"purple": (255, 0, 255)})
    #: What is trained: "vision" (the whole vision tower and its projection), "vo" (only the value
    #: and output projections of the vision tower's attention, so every change goes through W_VO) or
    #: "all" (both towers). The text tower stays frozen unless "all", so concept embeddings stay
    #: comparable between the two models.
    train: str = "all"


def base_checkpoint(cfg: FinetuneConfig) -> Path:
    """The folder of the checkpoint being fine-tuned ("toy": the shipped toy CLIP)."""
    from sith_lens.adapters.loading import toy_checkpoint_dir

    return toy_checkpoint_dir() if cfg.base == "toy" else Path(cfg.base)


def shifted_world(cfg: FinetuneConfig, seed: int | None = None) -> ToyWorld:
    """The fine-tuning world: the toy world with ``cfg.recolor`` applied (a fresh seed by default)."""
    return ToyWorld(seed=cfg.seed + SEED_OFFSET if seed is None else seed,
                    palette=tuple((k, tuple(int(x) for x in v)) for k, v in cfg.recolor.items()))


def rename_words(texts: list[str], rename: dict[str, str]) -> list[str]:
    """Replace whole words: ``rename_words(["a purple star"], {"purple": "magenta"}) == ["a magenta star"]``."""
    out = []
    for t in texts:
        for old, new in rename.items():
            t = re.sub(rf"\b{re.escape(old)}\b", new, t)
        out.append(t)
    return out


def finetune(cfg: FinetuneConfig, progress: bool = True):
    """Fine-tune; returns ``(model, tokenizer, log)`` (a transformers CLIPModel in eval mode).

    Example:
        >>> model, tokenizer, log = finetune(FinetuneConfig(steps=5, batch_size=8))
    """
    from transformers import AutoTokenizer, CLIPModel

    if cfg.steps < 1 or cfg.batch_size < 2 or cfg.batch_size % 2:
        raise ValueError(f"need steps >= 1 and an even batch_size >= 2, got {cfg.steps}, {cfg.batch_size}")
    if cfg.train not in TRAINABLE:
        raise ValueError(f"train must be one of {sorted(TRAINABLE)}, got {cfg.train!r}")
    base = base_checkpoint(cfg)
    if not (base / "config.json").is_file():
        raise ValueError(f"{base} is not a checkpoint folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    unknown = [w for w in cfg.rename.values() if tokenizer.convert_tokens_to_ids(w) == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"the tokenizer does not know {unknown}; a renamed word must be in its vocabulary")
    torch.manual_seed(cfg.seed)
    model = CLIPModel.from_pretrained(base).train()
    params = [p for n, p in model.named_parameters() if TRAINABLE[cfg.train](n)]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    world = shifted_world(cfg)
    log = []
    start = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="fine-tuning", disable=not progress):
        batch = world.contrastive_batch(step, cfg.batch_size // 2)
        enc = tokenizer(rename_words(batch.texts, cfg.rename), padding=True, return_tensors="pt")
        truth = batch_truth(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image = model.get_image_features(pixel_values=batch.pixels).pooler_output
            text = model.get_text_features(**enc).pooler_output
        loss = contrastive_loss(image, text, model.logit_scale, truth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            log.append({"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - start, 1)})
    return model.eval(), tokenizer, log


def save_finetuned(model, tokenizer, cfg: FinetuneConfig, out: str | Path, record: dict) -> Path:
    """Write the fine-tuned checkpoint atomically, with the base's image processor and a fresh image mean."""
    from safetensors.torch import save_file

    from sith_lens.adapters.loading import IMAGE_MEAN_FILE
    from sith_lens.atomic import atomic_directory

    mean = world_image_mean(model, shifted_world(cfg), n_batches=4, bf16=False)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copy(base_checkpoint(cfg) / "preprocessor_config.json", tmp / "preprocessor_config.json")
        save_file({"image_mean": mean.contiguous()}, str(tmp / IMAGE_MEAN_FILE))
        (tmp / "finetune.json").write_text(json.dumps(record, indent=2) + "\n")
    return Path(out)


def parse_rename(text: str) -> dict[str, str]:
    """``"purple=magenta,star=heart"`` -> ``{"purple": "magenta", "star": "heart"}`` (also for --recolor)."""
    try:
        pairs = [item.split("=") for item in text.split(",") if item.strip()]
        out = {old.strip(): new.strip() for old, new in pairs}
    except ValueError:
        raise ValueError(f"--rename must look like 'purple=magenta', got {text!r}") from None
    if not out or not all(out) or not all(out.values()):
        raise ValueError(f"--rename must look like 'purple=magenta', got {text!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.finetune_toy", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--base", default="toy")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rename", default="purple=magenta", help="caption words to replace, 'old=new,...'")
    parser.add_argument("--recolor", default="purple=255:0:255",
                        help="colours drawn with a new RGB, 'name=r:g:b,...' ('' for none)")
    parser.add_argument("--train", default="all", choices=sorted(TRAINABLE),
                        help="all: both towers (default); vision: the vision tower; vo: only its attention "
                        "value/output projections")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    recolor = {k: tuple(int(x) for x in v.split(":")) for k, v in parse_rename(args.recolor).items()} if args.recolor else {}
    cfg = FinetuneConfig(args.base, args.steps, args.batch_size, args.lr, args.seed, parse_rename(args.rename), recolor,
                         args.train)
    start = time.perf_counter()
    model, tokenizer, log = finetune(cfg, progress=not args.quiet)
    record = {"config": asdict(cfg), "seconds": round(time.perf_counter() - start, 1), "log": log}
    save_finetuned(model, tokenizer, cfg, args.out, record)
    print(json.dumps({"out": args.out, **record}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
