"""The runnable example scripts run end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path


DEMOS = Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str):
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_tour_reports_every_head_of_the_last_layers(tiny, pixels, capsys):
    tour = load_demo("hooks_tour")
    rows = tour.head_table(tiny, pixels, last_layers=2)
    assert [r["head"] for r in rows] == [f"L{l}H{h}" for l in (1, 2) for h in range(4)]
    assert all(r["ablation_shift"] > 0 and r["direct_share"] > 0 for r in rows)
    assert all(0 <= r["cls_self_attn"] <= 1 for r in rows)
    tour.main(["--model", "random:tiny", "--last-layers", "1"])
    assert "L1H3" in capsys.readouterr().out
