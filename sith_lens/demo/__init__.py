"""The Gradio explorer (``sith-lens demo``): Heads, Edit, LUCID and Compare tabs over one model.

- ``workbench``: the model and its heavy results, built once and cached (no Gradio);
- ``images``: safe image reading, heat-map overlays, patch crops (no Gradio);
- ``sith_views`` / ``lucid_views``: what each tab shows, as plain functions (no Gradio);
- ``ui``: the Gradio layout and events (``build_demo``, ``launch``).

Example:
    >>> from sith_lens.demo import Workbench, launch
    >>> app = launch(Workbench("toy"), port=None, block=False, quiet=True)   # block=True serves until Ctrl+C
    >>> app.local_url.startswith("http://127.0.0.1:")
    True
    >>> app.close()
    Closing server running on port: ...
"""

from .workbench import Workbench

__all__ = ["Workbench", "build_demo", "launch"]


def __getattr__(name: str):
    if name in ("build_demo", "launch"):  # gradio imports in seconds; only when the app is built
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
