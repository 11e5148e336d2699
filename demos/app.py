"""The sith-lens explorer, the same app as ``sith-lens demo``.

    python demos/app.py                      # the toy CLIP on http://127.0.0.1:7860
    python demos/app.py --model openai/clip-vit-base-patch32 --port 7861

Options are those of ``sith-lens demo --help``. To build the app in your own code:

    from sith_lens.demo import Workbench, build_demo
    demo = build_demo(Workbench("toy"))      # a gradio.Blocks; demo.launch(...)
"""

from __future__ import annotations

import sys

from sith_lens.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
