"""The README's quick starts run as written (on the shipped toy CLIP, offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_its_quick_starts() -> None:
    assert len(BLOCKS) == 5, f"expected the five quick starts, found {len(BLOCKS)} python blocks"
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("code", BLOCKS, ids=[f"quick_start_{i}" for i in range(len(BLOCKS))])
def test_quick_start_runs(code: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md quick start", "exec"), {"__name__": "readme"})
