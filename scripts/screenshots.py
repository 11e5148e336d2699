"""Screenshots of every tab of the explorer, taken from the real app in headless Chromium.

Launches the app on the toy CLIP, then, with Playwright driving Debian's Chromium, opens each tab,
runs its main action and saves a full-page PNG to ``docs/screenshots/``. Needs the ``playwright``
Python package (``pip install playwright``; no browser download: it uses /usr/bin/chromium).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until no Gradio output shows its progress/pending state."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => document.querySelectorAll('.pending, .generating, .eta-bar').length === 0",
                           timeout=timeout_ms)
    page.wait_for_timeout(800)


def shoot(page, path: Path) -> None:
    """A full-page screenshot, after scrolling to the bottom and back so that lazy images load."""
    height = page.evaluate("document.body.scrollHeight")
    for y in range(0, height + 900, 600):
        page.mouse.wheel(0, 600)
        page.wait_for_timeout(100)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from sith_lens.demo import Workbench, launch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo = launch(Workbench("toy"), block=False, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(demo.local_url)
            wait_idle(page)
            page.get_by_label("Which heads write concept…").fill("red")
            page.get_by_role("button", name="Search").click()
            wait_idle(page)
            shoot(page, out / "heads.png")

            page.get_by_role("tab", name="Edit").click()
            page.get_by_role("button", name="Apply edit").click()
            wait_idle(page)
            shoot(page, out / "edit.png")

            page.get_by_role("tab", name="LUCID").click()
            wait_idle(page)
            page.get_by_role("button", name="Probe").click()
            wait_idle(page)
            shoot(page, out / "lucid.png")

            page.get_by_role("tab", name="Compare").click()
            page.get_by_role("button", name="Compare", exact=True).click()
            wait_idle(page)
            shoot(page, out / "compare.png")
            browser.close()
    finally:
        demo.close()
    for name in ("heads", "edit", "lucid", "compare"):
        print(f"wrote {out / name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
