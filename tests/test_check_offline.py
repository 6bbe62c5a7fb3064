"""docs/check_offline.py, the static check: it flags what a page would fetch from the
network, missing local files and TeX outside math, and passes a page that loads MathJax
from the build."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "check_offline.py"
spec = importlib.util.spec_from_file_location("check_offline", SCRIPT)
check_offline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_offline)

MATH = '<span class="math notranslate nohighlight">\\(2^r\\)</span>'


def _build(root: Path, head: str, body: str = MATH, mathjax: bool = True) -> Path:
    """A one-page build: index.html, plus MathJax and its fonts in _static."""
    (root / "_static").mkdir(parents=True)
    (root / "_static" / "custom.css").write_text(
        ".a { background: url(data:image/png;base64,AAAA); }")
    if mathjax:
        fonts = root / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
        fonts.mkdir(parents=True)
        (fonts / "MathJax_Main-Regular.woff").write_bytes(b"")
        (root / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (root / "index.html").write_text(
        f"<html><head>{head}</head><body><p>{body}</p>"
        '<a href="https://pytorch.org">a link is not a load</a>'
        "<pre>r'\\alpha' in code is fine</pre></body></html>")
    return root


LOCAL = ('<link rel="stylesheet" href="_static/custom.css">'
         '<script defer src="_static/mathjax/tex-chtml.js"></script>')


def test_a_page_with_local_mathjax_passes(tmp_path):
    problems, math_pages = check_offline.static_check(_build(tmp_path, LOCAL))
    assert problems == []
    assert [p.name for p in math_pages] == ["index.html"]
    assert check_offline.main([str(tmp_path)]) == 0


@pytest.mark.parametrize("head, expected", [
    ('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>',
     "loads https://cdn.jsdelivr.net"),
    ('<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Lato">',
     "loads //fonts.googleapis.com"),
    ('<style>@import "https://example.org/a.css";</style>', "loads https://example.org/a.css"),
    ('<link rel="preconnect" href="https://fonts.gstatic.com">', "fonts.gstatic.com"),
    ('<script>document.write(\'<script src="https://cdn.x.org/a.js">\')</script>',
     "inline script loads https://cdn.x.org/a.js"),
    ('<script src="_static/gone.js"></script>', "_static/gone.js is missing"),
])
def test_network_loads_and_missing_files_are_flagged(tmp_path, head, expected):
    problems, _ = check_offline.static_check(_build(tmp_path, LOCAL + head))
    assert any(expected in p for p in problems), problems
    assert check_offline.main([str(tmp_path)]) == 1


def test_math_without_mathjax_from_the_build_is_flagged(tmp_path):
    problems, _ = check_offline.static_check(
        _build(tmp_path, '<link rel="stylesheet" href="_static/custom.css">', mathjax=False))
    assert any("loads no MathJax" in p for p in problems)
    assert any("fonts are missing" in p for p in problems)


def test_tex_outside_math_is_flagged(tmp_path):
    problems, _ = check_offline.static_check(
        _build(tmp_path, LOCAL, body=MATH + " and a raw \\(\\alpha\\) in the prose"))
    assert any("TeX outside math" in p and "\\alpha" in p for p in problems), problems


def test_remote_css_url_is_flagged(tmp_path):
    root = _build(tmp_path, LOCAL)
    (root / "_static" / "custom.css").write_text("body { font: url('https://x.org/f.woff'); }")
    problems, _ = check_offline.static_check(root)
    assert problems == ["_static/custom.css: loads https://x.org/f.woff from the network"]
