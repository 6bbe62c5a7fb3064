r"""Every code example a reader can paste runs in a fresh interpreter: the ``python``
blocks of the README and of the docs pages, the doctest blocks of the docs pages, and the
``Example:`` sections of the package's docstrings (with empty globals: an example imports
what it uses, nothing is injected behind the reader's back).

A block that needs something a test machine lacks says so in a comment of its own first
lines, ``# needs: corpus`` or ``# needs: cuda``, and is skipped here.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import graphformer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + sorted(
    (ROOT / "docs").glob("*.rst"))
NEEDS = re.compile(r"^\s*#\s*needs:\s*(\w+)", re.M)

_MD_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
_RST_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<kind>code-block:: python|doctest::)[^\n]*\n"
                        r"(?P<body>(?:(?P=indent)[ \t]+[^\n]*\n|[ \t]*\n)+)", re.M)


def _dedent(text: str) -> str:
    lines = text.splitlines()
    width = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[width:] for line in lines).strip() + "\n"


def _snippets(page: Path) -> list[tuple[str, str, str]]:
    """(id, kind, code) of each example on a page; rst doctest blocks of one page are
    joined, as Sphinx runs them in one namespace."""
    text = page.read_text(encoding="utf-8")
    found, doctests = [], []
    if page.suffix == ".md":
        for n, m in enumerate(_MD_BLOCK.finditer(text), 1):
            found.append((f"{page.name}:{n}", "python", _dedent(m.group("body"))))
    else:
        for n, m in enumerate(_RST_BLOCK.finditer(text), 1):
            body = _dedent(m.group("body"))
            if m.group("kind").startswith("doctest"):
                doctests.append(body)
            else:
                found.append((f"{page.name}:{n}", "python", body))
    if doctests:
        found.append((f"{page.name}:doctest", "doctest", "\n".join(doctests)))
    return found


SNIPPETS = [s for page in PAGES for s in _snippets(page)]

_RUN_DOCTEST = """
import doctest, sys
test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, "snippet", None, 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""


def test_pages_have_examples():
    ids = [s[0] for s in SNIPPETS]
    assert any(i.startswith("README.md") for i in ids)
    assert "install.rst:doctest" in ids and any(i.startswith("index.rst") for i in ids)


@pytest.mark.parametrize("name,kind,code", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs_in_a_fresh_interpreter(name, kind, code, tmp_path):
    needs = NEEDS.findall(code)
    if needs:
        pytest.skip(f"{name} needs {', '.join(needs)}")
    args = [sys.executable, "-c", _RUN_DOCTEST] if kind == "doctest" else [sys.executable, "-"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run(args, input=code, capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"{name} failed when pasted:\n{code}\n{proc.stdout}{proc.stderr}"


def _modules():
    for info in pkgutil.walk_packages(graphformer.__path__, "graphformer."):
        yield importlib.import_module(info.name)


def _docstring_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    seen = set()
    for module in [graphformer, *_modules()]:
        for test in finder.find(module, globs={}):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                yield test


DOCSTRING_EXAMPLES = list(_docstring_examples())


@pytest.mark.parametrize("test", DOCSTRING_EXAMPLES, ids=[t.name for t in DOCSTRING_EXAMPLES])
def test_docstring_example(test):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    test.globs = {}  # nothing from the module: the example imports what it uses
    runner.run(test, out=lambda s: pytest.fail(s, pytrace=False))
    assert runner.failures == 0
