"""Every docstring example in the library runs, as a doctest, and shows what it claims.

Modules are imported under their installed names (``sith_lens.adapters.loading``, not
``adapters.loading``), so each runs once, as users import it. Examples build their own models
(``"toy"``, ``"random:tiny"``) and need no download. A module without examples is fine; an example
that fails, or one whose output differs from the docstring, fails here with doctest's report.
"""

from __future__ import annotations

import doctest
import importlib
import io
import os
import pkgutil

import pytest

import sith_lens
import sith_lens.adapters

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def library_modules() -> list[str]:
    """Every module of the installed package, ``sith_lens.adapters`` included."""
    names = ["sith_lens"]
    for package in (sith_lens, sith_lens.adapters):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(set(names))


def docstring_examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in library_modules():
        module = importlib.import_module(name)
        tests += [t for t in finder.find(module, name) if t.examples and t.name.startswith(name)]
    return sorted(tests, key=lambda t: t.name)


EXAMPLES = docstring_examples()


def test_the_library_has_examples() -> None:
    # the walk finds the modules (a wrong package path would find none and pass vacuously)
    modules = library_modules()
    assert {"sith_lens.sith", "sith_lens.adapters.hooked_clip", "sith_lens.lucid.store"} <= set(modules)
    assert len(EXAMPLES) >= 240, f"only {len(EXAMPLES)} docstrings with examples found"


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(test: doctest.DocTest, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    test = doctest.DocTest(test.examples, dict(test.globs), test.name, test.filename, test.lineno, test.docstring)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
    runner.run(test, out=out.write, clear_globs=True)
    assert runner.failures == 0, f"{test.name} ({os.path.relpath(test.filename or '?')}:{test.lineno}):\n{out.getvalue()}"
