r"""The documentation reads as a product: no page speaks of the work's sessions or issue
numbers, and every page that the landing page's table of contents names exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ([ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
         + sorted((ROOT / "docs").glob("*.rst")) + sorted((ROOT / "docs" / "tutorials").glob("*.py")))
LAB_NOTEBOOK = re.compile(r"\bsessions?\b|\bissues? *#?\d+", re.I)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_page_reads_as_a_lab_notebook(page):
    text = page.read_text(encoding="utf-8")
    hits = [m.group(0) for m in LAB_NOTEBOOK.finditer(text)]
    assert not hits, f"{page.relative_to(ROOT)} mentions {hits}"


def test_the_table_of_contents_names_existing_pages():
    index = (ROOT / "docs" / "index.rst").read_text()
    toctree = index[index.index(".. toctree::"):]
    entries = [line.strip() for line in toctree.splitlines()[1:]
               if line.strip() and not line.strip().startswith(":")]
    for entry in entries:
        if entry.startswith("auto_examples"):
            continue
        assert any((ROOT / "docs" / f"{entry}{ext}").exists() for ext in (".rst", ".md")), entry
