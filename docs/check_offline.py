r"""Checks that the built HTML documentation reads right with no network.

The static check (the default: standard library only, a few seconds) reads every page and
stylesheet of the build and fails when

* a page or stylesheet loads anything from the network: a script, stylesheet, font, icon,
  image, frame, ... whose address starts with ``http:``, ``https:`` or ``//`` (plain links
  that the reader may follow, ``<a href="https://...">``, are fine);
* a script or stylesheet that a page loads is missing from the build;
* a page with math does not load MathJax from the build, or MathJax or its fonts are
  missing;
* TeX shows in a page's text outside its math elements and code (a formula written
  without ``:math:``, or dollar math that the markdown parser did not take).

``--browser CHROMIUM`` adds a check in a real browser: every page with math (or those named
by ``--pages``) is opened from ``file://`` in headless Chromium with the network blocked;
once MathJax has run, the page's DOM is read back and the check fails when raw TeX is left
in the visible text (``\(``, ``\[``, ``$$`` or a ``\command``), when a page has fewer
typeset formulas than math elements, when MathJax reports an error, or when the page asked
for anything over the network (read from Chromium's net log). ``--screenshots DIR`` also
saves a PNG of each of those pages. CI runs the static check only (it may have no browser).

Usage::

    python docs/check_offline.py                      # docs/_build/html
    python docs/check_offline.py BUILD_DIR --browser chromium --screenshots shots/
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: ``<link rel=...>`` values that make the browser fetch the address (the others, such as
#: ``next``, ``index`` or ``canonical``, are links the reader may follow).
FETCHING_RELS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "mask-icon",
                 "preload", "modulepreload", "prefetch", "prerender", "preconnect",
                 "dns-prefetch", "manifest"}
#: Attributes through which an element fetches an address.
FETCHING_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"),
                  "iframe": ("src",), "frame": ("src",), "embed": ("src",),
                  "object": ("data",), "video": ("src", "poster"), "audio": ("src",),
                  "track": ("src",), "input": ("src",), "image": ("href", "xlink:href"),
                  "use": ("href", "xlink:href")}
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]*)\1\s*\)|@import\s+(['"])([^'"]*)\3""")
#: What raw TeX looks like in a page's visible text, once MathJax has run.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\[A-Za-z]{2,}")
#: Elements whose text is not prose: code keeps its backslashes, MathJax's output holds
#: the typeset formula (and its MathML copy for screen readers).
NOT_PROSE = {"script", "style", "pre", "code", "kbd", "samp", "textarea", "noscript",
             "template", "head", "title", "mjx-container", "math"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}


def is_remote(address: str) -> bool:
    """An address the browser would fetch over the network (``data:`` and relative
    paths are local)."""
    address = address.strip().lower()
    return address.startswith(("http:", "https:", "//", "ftp:", "ws:", "wss:"))


class PageScan(HTMLParser):
    """Collects, from one page, the addresses it fetches, its math elements, its
    typeset formulas (once MathJax ran) and its text outside code, typeset formulas and,
    with ``skip_math`` (the built page, before MathJax), math elements."""

    def __init__(self, skip_math: bool = True) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[tuple[str, str]] = []  # (what, address)
        self.inline_css: list[str] = []
        self.inline_js: list[str] = []
        self.math_elements = 0
        self.typeset = 0
        self.errors = 0
        self.skip_math = skip_math
        self.text: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # open elements, and whether to skip
        self._skip = 0  # open elements whose text is not prose
        self._in_style = self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "link" and FETCHING_RELS & set(a.get("rel", "").lower().split()):
            self.fetched.append((f"<link rel={a.get('rel')}>", a.get("href", "")))
        for attr in FETCHING_ATTRS.get(tag, ()):
            if attr in a:
                values = ([part.split()[0] for part in a[attr].split(",") if part.split()]
                          if attr == "srcset" else [a[attr]])
                self.fetched += [(f"<{tag} {attr}>", v) for v in values]
        if "style" in a:
            self.inline_css.append(a["style"])
        is_math = tag in ("span", "div") and "math" in a.get("class", "").split()
        self.math_elements += is_math
        self.typeset += tag == "mjx-container"
        self.errors += tag == "mjx-merror" or "data-mjx-error" in a
        self._in_style, self._in_script = tag == "style", tag == "script"
        if tag not in VOID:
            self._stack.append((tag, (is_math and self.skip_math) or tag in NOT_PROSE))
            self._skip += self._stack[-1][1]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self._stack and self._stack[-1][0] == tag:
            self._skip -= self._stack.pop()[1]

    def handle_endtag(self, tag: str) -> None:
        if any(t == tag for t, _ in self._stack):  # close it and anything left open in it
            while True:
                t, skip = self._stack.pop()
                self._skip -= skip
                if t == tag:
                    break
        self._in_style = self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.inline_css.append(data)
        elif self._in_script:
            self.inline_js.append(data)
        elif not self._skip:
            self.text.append(data)

    def raw_tex(self) -> list[str]:
        """TeX in the prose: outside math elements, typeset formulas and code."""
        return sorted(set(RAW_TEX.findall(" ".join(self.text))))


def css_addresses(css: str) -> list[str]:
    return [m.group(2) or m.group(4) or "" for m in CSS_URL.finditer(css)]


def local_target(page: Path, address: str) -> Path | None:
    """The file of the build that a relative address points to (``None`` for ``data:``
    and the like)."""
    parts = urlsplit(address)
    if parts.scheme or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def html_pages(root: Path) -> list[Path]:
    """The pages of the build (not the theme's templates copied into ``_static``)."""
    return sorted(p for p in root.rglob("*.html")
                  if p.relative_to(root).parts[0] not in ("_static", "_sources"))


def static_check(root: Path) -> tuple[list[str], list[Path]]:
    """Problems found in the build at ``root``, and the pages that have math."""
    root = root.resolve()
    problems: list[str] = []
    math_pages: list[Path] = []
    pages = html_pages(root)
    if not pages:
        return [f"{root}: no HTML pages (build the docs first)"], []
    for page in pages:
        rel = page.relative_to(root)
        scan = PageScan()
        scan.feed(page.read_text(encoding="utf-8", errors="replace"))
        fetched = list(scan.fetched)
        for css in scan.inline_css:
            fetched += [("url() in inline CSS", u) for u in css_addresses(css)]
        for js in scan.inline_js:  # an address in code that may load it
            fetched += [("inline script", u) for u in re.findall(r"""https?://[^\s'"<>]+""", js)]
        mathjax = []
        for what, address in fetched:
            if is_remote(address):
                problems.append(f"{rel}: {what} loads {address} from the network")
                continue
            target = local_target(page, address)
            if target is None:
                continue
            if not target.is_file():
                problems.append(f"{rel}: {what} {address} is missing from the build")
            elif (target.is_relative_to(root)
                  and "mathjax" in str(target.relative_to(root)).lower()):
                mathjax.append(target)
        raw = scan.raw_tex()
        if raw:
            problems.append(f"{rel}: TeX outside math elements (not marked as math): "
                            f"{' '.join(raw[:8])}")
        if scan.math_elements:
            math_pages.append(page)
            if not mathjax:
                problems.append(f"{rel}: has {scan.math_elements} math elements but loads "
                                "no MathJax from the build")
    for css in sorted(root.rglob("*.css")):
        for address in css_addresses(css.read_text(encoding="utf-8", errors="replace")):
            if is_remote(address):
                problems.append(f"{css.relative_to(root)}: loads {address} from the network")
            else:
                target = local_target(css, address)
                if target is not None and not target.is_file():
                    problems.append(f"{css.relative_to(root)}: {address} is missing")
    if math_pages:
        fonts = list(root.glob("_static/mathjax/output/chtml/fonts/woff-v2/*.woff"))
        if not fonts:
            problems.append("_static/mathjax/output/chtml/fonts/woff-v2: MathJax's fonts "
                            "are missing from the build")
    return problems, math_pages


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
    # no network: every request goes to a closed port, every name fails to resolve
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
]


def page_requests(netlog: Path) -> list[str]:
    """The network requests that the page made (not the browser's own, which have no
    origin), from Chromium's net log."""
    try:
        log = json.loads(netlog.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if (types.get(event.get("type")) == "URL_REQUEST_START_JOB" and "url" in params
                and params.get("initiator") != "not an origin"):
            urls.append(params["url"])
    return urls


def browser_check(browser: str, root: Path, pages: list[Path], shots: Path | None,
                  height: int, budget_ms: int) -> list[str]:
    """Opens each page in headless Chromium with the network blocked and checks what
    the reader sees once MathJax ran."""
    problems = []
    for page in pages:
        rel = page.relative_to(root)
        with tempfile.TemporaryDirectory() as tmp:
            netlog = Path(tmp) / "net.json"
            cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                   f"--log-net-log={netlog}", f"--virtual-time-budget={budget_ms}",
                   "--dump-dom", page.resolve().as_uri()]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode != 0 or "<html" not in run.stdout:
                problems.append(f"{rel}: Chromium failed ({run.returncode}): "
                                f"{run.stderr.strip().splitlines()[-1:]}")
                continue
            static = PageScan()
            static.feed(page.read_text(encoding="utf-8", errors="replace"))
            scan = PageScan(skip_math=False)  # MathJax replaced their TeX, or failed
            scan.feed(run.stdout)
            raw = scan.raw_tex()
            if raw:
                problems.append(f"{rel}: raw TeX in the visible text: {' '.join(raw[:8])}")
            if scan.typeset < static.math_elements:
                problems.append(f"{rel}: {scan.typeset} formulas typeset, of "
                                f"{static.math_elements} math elements")
            if scan.errors:
                problems.append(f"{rel}: MathJax reports {scan.errors} errors")
            for url in page_requests(netlog):
                problems.append(f"{rel}: asked the network for {url}")
            print(f"  {rel}: {static.math_elements} math elements, {scan.typeset} typeset"
                  + (", raw TeX left" if raw else ""))
            if shots is not None:
                name = str(rel.with_suffix("")).replace("/", "__") + ".png"
                shot = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile2",
                        f"--virtual-time-budget={budget_ms}", f"--window-size=1280,{height}",
                        f"--screenshot={shots.resolve() / name}", page.resolve().as_uri()]
                subprocess.run(shot, capture_output=True, text=True, timeout=120)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?",
                        default=str(Path(__file__).parent / "_build" / "html"),
                        help="the HTML build (default: docs/_build/html)")
    parser.add_argument("--browser", metavar="CHROMIUM",
                        help="also open the pages in this headless Chromium, network blocked")
    parser.add_argument("--pages", nargs="+", metavar="GLOB",
                        help="pages for the browser check, as globs relative to the build "
                             "(default: every page with math, and index.html)")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="with --browser: save a PNG of each page checked here")
    parser.add_argument("--height", type=int, default=2000,
                        help="window height of the screenshots, pixels (default 2000)")
    parser.add_argument("--budget-ms", type=int, default=10000,
                        help="virtual time Chromium gives each page to run MathJax")
    args = parser.parse_args(argv)

    root = Path(args.html).resolve()
    start = time.perf_counter()
    problems, math_pages = static_check(root)
    n_pages = len(html_pages(root))
    print(f"static check: {n_pages} pages, {len(math_pages)} with math, "
          f"{len(problems)} problems ({time.perf_counter() - start:.1f} s)")
    if args.browser:
        browser = shutil.which(args.browser) or args.browser
        if not Path(browser).exists():
            parser.error(f"--browser {args.browser}: no such program")
        if args.pages:
            pages = sorted({p for g in args.pages for p in html_pages(root)
                            if fnmatch.fnmatch(str(p.relative_to(root)), g)})
            if not pages:
                parser.error(f"--pages {' '.join(args.pages)}: no page of {root} matches")
        else:
            pages = sorted(set(math_pages) | {root / "index.html"})
        shots = Path(args.screenshots) if args.screenshots else None
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        found = browser_check(browser, root, pages, shots, args.height, args.budget_ms)
        print(f"browser check: {len(pages)} pages, {len(found)} problems "
              f"({time.perf_counter() - start:.0f} s)")
        problems += found
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
