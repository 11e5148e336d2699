"""TransformerLens's optional hook points, and its rule that a hook on one that is switched off is
refused rather than silently never called.

Four hook points exist on every block but fire only while their switch is on, as in
``HookedTransformer`` (switch, then what it turns on):

==========================  ==================================================================
``use_attn_result``         ``attn.hook_result``, per-head outputs ``[batch, pos, n_heads, d_model]``
``use_split_qkv_input``     ``hook_q_input``, ``hook_k_input``, ``hook_v_input`` ``[batch, pos, n_heads, d_model]``
``use_attn_in``             ``hook_attn_in`` ``[batch, pos, n_heads, d_model]``
``use_hook_mlp_in``         ``hook_mlp_in`` ``[batch, pos, d_model]``
==========================  ==================================================================

A hook added by name to a switched-off point raises ``HookSwitchedOffError`` (TransformerLens
asserts in ``add_hook`` and lets ``run_with_hooks`` through; here both refuse). ``run_with_cache``
with no ``names_filter`` (or a function) caches the points that fire and skips the others; a
names_filter that names a switched-off point is refused.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

# (hook-name suffixes, cfg switch, setter)
SWITCHES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("attn.hook_result",), "use_attn_result", "set_use_attn_result"),
    (("hook_q_input", "hook_k_input", "hook_v_input"), "use_split_qkv_input", "set_use_split_qkv_input"),
    (("hook_attn_in",), "use_attn_in", "set_use_attn_in"),
    (("hook_mlp_in",), "use_hook_mlp_in", "set_use_hook_mlp_in"),
)


class HookSwitchedOffError(ValueError):
    """A hook was added to a hook point whose switch (``cfg.use_attn_result``...) is off."""


class HookSwitches:
    """Mixin for a ``HookedRootModule`` tower with a ``cfg`` holding the four switches."""

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Turn per-head results (``blocks.{l}.attn.hook_result``) on or off, as in TransformerLens."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Turn ``blocks.{l}.hook_q_input``/``hook_k_input``/``hook_v_input`` on or off: one copy of
        the block input per head for queries, keys and values, so path patching can edit each."""
        self.cfg.use_split_qkv_input = bool(use_split_qkv_input)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Turn ``blocks.{l}.hook_attn_in`` on or off (one copy of the block input per head)."""
        self.cfg.use_attn_in = bool(use_attn_in)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Turn ``blocks.{l}.hook_mlp_in`` on or off (the MLP's input, before ``ln2``)."""
        self.cfg.use_hook_mlp_in = bool(use_hook_mlp_in)

    def hook_is_switched_on(self, name: str) -> bool:
        """False for a hook point that does not fire with the tower's current switches.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("random:tiny")
            >>> model.vision.hook_is_switched_on("blocks.0.attn.hook_result")
            False
            >>> model.vision.set_use_attn_result(True)
            >>> model.vision.hook_is_switched_on("blocks.0.attn.hook_result")
            True
        """
        return all(getattr(self.cfg, flag) for suffixes, flag, _ in SWITCHES if name.endswith(suffixes))

    def _check_switched_on(self, name: str) -> None:
        for suffixes, flag, setter in SWITCHES:
            if name.endswith(suffixes) and not getattr(self.cfg, flag):
                raise HookSwitchedOffError(
                    f"hook {name!r} only fires with cfg.{flag}=True; call tower.{setter}(True) first "
                    "(as in TransformerLens)"
                )

    # -- the places where HookedRootModule adds hooks ----------------------------------------------
    def check_hooks_to_add(self, hook_point: Any, hook_point_name: str, hook: Callable, *args: Any, **kwargs: Any) -> None:
        self._check_switched_on(hook_point_name)

    def _enable_hook_with_name(self, name: str, hook: Callable, dir: str) -> None:
        self._check_switched_on(name)
        super()._enable_hook_with_name(name, hook, dir)

    def _enable_hooks_for_points(self, hook_points: Iterable[tuple[str, Any]], enabled: Callable, hook: Callable, dir: str) -> None:
        live = [(name, hp) for name, hp in hook_points if self.hook_is_switched_on(name)]
        super()._enable_hooks_for_points(live, enabled, hook, dir)

    def get_caching_hooks(self, names_filter: Any = None, *args: Any, **kwargs: Any) -> tuple[dict, list, list]:
        explicit = [names_filter] if isinstance(names_filter, str) else names_filter if isinstance(names_filter, list) else []
        for name in explicit:
            self._check_switched_on(name)
        cache, fwd, bwd = super().get_caching_hooks(names_filter, *args, **kwargs)
        return cache, [h for h in fwd if self.hook_is_switched_on(h[0])], [h for h in bwd if self.hook_is_switched_on(h[0])]
