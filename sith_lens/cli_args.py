"""Argument types for the ``sith-lens`` command: each checks its flag when the command line is
parsed, before any model is loaded, and says what a valid value looks like.

Example:
    >>> parser = ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--k", type=int_at_least(1), default=5)
    >>> parser.parse_args(["--k", "3"]).k
    3
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import math
import re
import sys
from typing import Callable, Iterator, NoReturn, Sequence


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one ``sith-lens: error:`` line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"sith-lens: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


class RegistryNames(Sequence[str]):
    """The sorted keys of a registry dict ``module.name``, read when first needed: argparse's
    ``choices`` from the registry itself, without importing it (and torch) to build the parser.

    Example:
        >>> names = RegistryNames("sith_lens.pursuit", "METHODS")
        >>> "comp" in names, list(names)[:2]
        (True, ['comp', 'mp'])
    """

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> list[str]:
        return sorted(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


#: The pursuit methods ``sith-lens explain --method`` accepts: ``sith_lens.pursuit.METHODS``.
PURSUIT_METHODS = RegistryNames("sith_lens.pursuit", "METHODS")


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


def _float(text: str, want: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {want}, got {value}")
    return value


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); either end may be open-ended."""
    if low is not None and high is not None:
        want = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        want = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        want = "a finite number"

    def parse(text: str) -> float:
        value = _float(text, want)
        if low is not None and (value < low or (low_open and value == low)) or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be {want}, got {value:g}")
        return value

    return parse


def yes_no(text: str) -> bool:
    """``yes``/``no`` (also ``true``/``false``, ``1``/``0``, ``on``/``off``)."""
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be yes or no, got {text!r}")


def share(text: str) -> float:
    """A number in (0, 1]."""
    value = _float(text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {value:g}")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def host(text: str) -> str:
    """An IP address or a host name to serve on."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", text) or not _HOSTNAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or host name; use 127.0.0.1 (this machine "
                                         "only) or 0.0.0.0 (every interface)")
    return text


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port in 1..65535, got {text!r}")
    return value


def torch_device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, available on this machine."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here (torch {torch.__version__}); "
                                             "use --device cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r} is not supported; use cpu, cuda, cuda:N or mps")
    return text


def output_folder(text: str) -> str:
    """A folder to write: new, or an existing folder (not a file)."""
    from pathlib import Path

    if Path(text).is_file():
        raise argparse.ArgumentTypeError(f"must be a folder, but {text} is a file; choose another path")
    return text


def png_path(text: str) -> str:
    """A path ending in .png."""
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"must name a .png file, got {text!r}")
    return text


def template(text: str) -> str:
    """A prompt template with one ``{}``."""
    if text.count("{}") != 1:
        raise argparse.ArgumentTypeError(f"must hold exactly one {{}} where the concept goes, e.g. 'a photo of {{}}.'; "
                                         f"got {text!r}")
    return text


_LAYERS = re.compile(r"\s*(all|-?\d*\s*:\s*-?\d*|-?\d+(\s*,\s*-?\d+)*)\s*")


def layer_selection(text: str) -> str:
    """``all``, a slice like ``-4:`` or ``2:5``, or a list like ``0,3,-1`` (checked against the model later)."""
    if not _LAYERS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer selection; use 'all', a slice like '-4:' or a "
                                         "list like '0,3,-1'")
    return text
