"""Sphinx configuration of graphformer's documentation.

Build with ``make docs`` (HTML in ``docs/_build/html``, then the doctests). Neither the
build nor the reader needs a network: the tutorials run on generated data, and the built
pages load nothing from the internet (MathJax comes with the build, from the
``sphinx-mathjax-offline`` package, and the theme ships its own fonts and icons).
``python docs/check_offline.py`` checks the built HTML for that.

Two pieces are generated here, at every build, into the git-ignored ``docs/gen_modules``:

* the API reference: one page per public class and function of the package (found by
  walking the modules, so that nothing public is left out), grouped by module on
  ``api.rst``;
* a placeholder page for every results file (``docs/results_*.md``) that has not been
  written yet, naming the command that produces it.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import graphformer  # noqa: E402

project = "graphformer"
author = "the graphformer developers"
copyright = "2025, the graphformer developers"
release = version = graphformer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: math reads offline
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# results pages in markdown may write math as $...$ and $$...$$
myst_enable_extensions = ["dollarmath", "amsmath"]
exclude_patterns = ["_build", "tutorials", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# -- theme --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"graphformer {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# no left navigation where the page needs the width (code, wide tables, the landing page)
html_sidebars = {"index": [], "install": [], "results": [], "results_*": [], "api": [], "gpu": [],
                 "cluster": [],
                 "auto_examples/*": [], "gen_modules/api/*": []}
html_show_sourcelink = False

# MathJax 3.2, served from the build itself (copied by sphinx-mathjax-offline at the end of
# the build): the docs read right with no network, on a cluster's login node or from a
# copied folder. The path is relative to _static. The configuration is MathJax 3's, so
# mathjax3_config, not Sphinx's default mathjax4_config; myst-parser adds its
# ``processHtmlClass`` to it (math in markdown pages). A formula wider than the column
# scrolls instead of running off the page: custom.css does that (MathJax 3 has no
# displayOverflow option, and rejects options it does not know).
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config: dict = {"options": {}}  # myst-parser fills in the options (not empty: it
# would then write them to mathjax4_config)

# -- autodoc ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autosummary_generate = False  # the stub pages are written below
autodoc_inherit_docstrings = False  # no PyG / torch docstrings on overridden methods
autodoc_default_options = {"exclude-members": "propagate, edge_updater"}  # PyG-generated
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False

# -- doctest ------------------------------------------------------------------------------
# No global set-up: every example imports what it uses, so that it runs when pasted into a
# fresh interpreter (tests/test_snippets.py runs the same examples that way).

# -- plot directive (the picture on the landing page) --------------------------------------
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.dpi": 110, "savefig.bbox": "tight"}
plot_apply_rcparams = True

# -- sphinx-gallery ----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "write_computation_times": False,
    "doc_module": ("graphformer",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"graphformer": None},
    "matplotlib_animations": False,
    "thumbnail_size": (320, 224),
    "min_reported_time": 1,
    "show_signature": False,
    "capture_repr": (),  # the tutorials print what they show
    # matplotlib is not reset between tutorials (none changes its settings), so that
    # the settings below hold: figures cropped to their content, labels never cut.
    "reset_modules": (),
}
matplotlib.rcParams["savefig.bbox"] = "tight"

# The tutorials run in this process: one thread, since their tensors are small and the
# machines that build the docs have two cores, often shared (several threads spinning on
# a busy machine cost several times the CPU time).
import torch  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
warnings.filterwarnings("ignore", category=UserWarning, message=".*non-GUI backend.*")

# -- API reference --------------------------------------------------------------------------
GEN = HERE / "gen_modules"
API_DIR = GEN / "api"

#: Sections of the API page, in order: the namespace whose ``__all__`` they show, a title.
#: An object is documented once, under the first namespace below that exports it (its
#: shortest public path); public modules not named here get a section of their own.
API_SECTIONS = [
    ("graphformer.graph", "Token graphs"),
    ("graphformer.nn", "Layers and stacks"),
    ("graphformer.nn.conv", "Layer helpers"),
    ("graphformer.nn.kernels", "Attention kernels"),
    ("graphformer.nn.dynamics", "Dynamics: schemes and update methods"),
    ("graphformer.models", "Models"),
    ("graphformer.models.gpt", "GPT building blocks"),
    ("graphformer.transforms", "Transforms (rewiring)"),
    ("graphformer.datasets", "Data sets"),
    ("graphformer.diagnostics", "Diagnostics"),
    ("graphformer.train", "Training language models"),
    ("graphformer.studies.graph_tasks", "Studies: graph tasks"),
    ("graphformer.studies.sequence_tasks", "Studies: causal sequence tasks"),
    ("graphformer.studies.fit", "Studies: the fit loop"),
    ("graphformer.studies.transfer", "Studies: graph transfer (Di Giovanni et al.)"),
    ("graphformer.studies.oversquash", "Studies: the over-squashing study"),
    ("graphformer.studies.sweep", "Studies: sweep"),
    ("graphformer.studies.store", "Studies: result store"),
    ("graphformer.studies.report", "Studies: report"),
    ("graphformer.studies.executor", "Studies: the executor (Ray)"),
    ("graphformer.studies.command", "Studies: the command line's work"),
    ("graphformer.schedule", "Learning-rate schedule"),
    ("graphformer.plot", "Plotting"),
]


def _public_names(module) -> list[str]:
    """``__all__``, or the classes and functions defined in the module (or, for a
    package, in its submodules) whose names do not start with an underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        prefix = module.__name__
        is_pkg = hasattr(module, "__path__")
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and (obj.__module__ == prefix
                      or (is_pkg and obj.__module__.startswith(prefix + ".")))]
    return [n for n in names
            if inspect.isclass(getattr(module, n, None))
            or inspect.isfunction(getattr(module, n, None))]


def _modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(graphformer.__path__, "graphformer.")
             if not any(part.startswith("_") for part in m.name.split("."))]
    order = [name for name, _ in API_SECTIONS]
    return order + [m for m in found if m not in order]


def _first_paragraph(module) -> str:
    doc = inspect.getdoc(module) or ""
    return doc.split("\n\n")[0].strip()


def _stub(fullname: str, obj) -> str:
    module, _, name = fullname.rpartition(".")
    title = f"{name}\n{'=' * len(name)}\n\n.. currentmodule:: {module}\n\n"
    if inspect.isclass(obj):
        body = f".. autoclass:: {name}\n   :members:\n   :show-inheritance:\n"
    else:
        body = f".. autofunction:: {name}\n"
    return title + body + f"\n.. minigallery:: {fullname}\n   :add-heading: Used in the tutorials\n"


def write_api() -> None:
    """Writes a page per public object to ``gen_modules/api`` and the sections of
    ``api.rst`` to ``gen_modules/api_sections.txt`` (included by ``api.rst``)."""
    API_DIR.mkdir(parents=True, exist_ok=True)
    titles = dict(API_SECTIONS)
    seen: set[int] = set()
    pages: dict[str, str] = {}
    sections = []
    for modname in _modules():
        module = importlib.import_module(modname)
        entries = []
        for name in _public_names(module):
            obj = getattr(module, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            fullname = f"{modname}.{name}"
            pages[fullname] = _stub(fullname, obj)
            entries.append(name)
        if not entries:
            continue
        title = titles.get(modname, modname)
        intro = _first_paragraph(module)
        lines = [title, "-" * len(title), "", f"``{modname}``: {intro}" if intro else
                 f"``{modname}``", "", f".. currentmodule:: {modname}", "",
                 ".. autosummary::", "   :toctree: gen_modules/api", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in entries]
        sections.append("\n".join(lines) + "\n")
    for fullname, text in pages.items():
        path = API_DIR / f"{fullname}.rst"
        if not path.exists() or path.read_text() != text:  # keep mtimes: no needless rereads
            path.write_text(text)
    for stale in API_DIR.glob("*.rst"):
        if stale.stem not in pages:
            stale.unlink()
    text = "\n\n".join(sections)
    out = GEN / "api_sections.txt"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


# -- results pages ----------------------------------------------------------------------
#: Results files written by the other work streams, in the order of the results page:
#: (file, title of its placeholder, the command that produces it).
RESULTS = [
    ("results_oversquash.md", "Over-squashing, over-smoothing and the runway",
     "make run        # = python benchmarks/oversquash.py (writes results/oversquash/results.md)"),
    ("results_lm.md", "Language modelling: GPT, heavy-ball, Nesterov and friends",
     "python benchmarks/lm.py --data ../shared/data/tinyshakespeare.txt \\\n"
     "    --compare gpt nesterov nesterov0 heavyball strang diff pause --seeds 0 1 2"),
    ("results_speed.md", "Speed of the attention kernels",
     "make speed      # = python benchmarks/speed.py"),
    ("results_molecules.md", "GraphGPS on molecules",
     "make molecules  # = python benchmarks/molecules.py"),
]


def write_results_placeholders() -> list[str]:
    """The toctree entries of the results page: ``results_x`` for a file that exists, a
    generated placeholder page for one that does not yet."""
    out_dir = GEN / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for filename, title, command in RESULTS:
        stem = Path(filename).stem
        if (HERE / filename).exists():
            entries.append(stem)
            stale = out_dir / f"{stem}.rst"
            if stale.exists():
                stale.unlink()
            continue
        code = "\n".join("      " + line for line in command.splitlines())
        text = (f"{title}\n{'=' * len(title)}\n\n"
                f".. note::\n\n"
                f"   Not measured yet. This page will show ``docs/{filename}``, which is\n"
                f"   written from the output of\n\n"
                f"   .. code-block:: bash\n\n{code}\n\n"
                f"   and added to the repository before a release.\n")
        path = out_dir / f"{stem}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        entries.append(f"gen_modules/results/{stem}")
    return entries


write_api()
RESULTS_TOCTREE = write_results_placeholders()


def _inject_results(app, docname, source):
    if docname == "results":
        toctree = "\n".join(["", ".. toctree::", "   :maxdepth: 2", ""]
                            + [f"   {e}" for e in RESULTS_TOCTREE]) + "\n"
        source[0] = source[0].replace(".. results-pages (filled in by conf.py)", toctree)


def _results_outdated(app, env, added, changed, removed):
    return ["results"] if "results" in env.found_docs else []


def _tidy_summaries() -> None:
    """autosummary's one-line summaries cut a docstring's first paragraph; when that
    paragraph leads into a formula it ends in a comma or colon, and autosummary appends
    a period (",."). Keep the period only."""
    import re

    from sphinx.ext import autosummary

    extract = getattr(autosummary, "extract_summary", None)
    if extract is None or getattr(extract, "_graphformer", False):
        return

    def summary(doc, document):
        return re.sub(r"\s*[,:;]\.$", ".", extract(doc, document))

    summary._graphformer = True
    autosummary.extract_summary = summary


_tidy_summaries()


def _note_source(app, what, name, obj, options, lines):
    """Make an API page depend on the file that defines each documented object, so that an
    incremental build rebuilds the page (and reruns its doctests) when a docstring changes
    in a submodule; by default Sphinx only records the package's ``__init__.py``."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(obj))
    except (TypeError, ValueError):  # built-ins, data attributes, wrapper cycles
        return
    if path and os.path.isfile(path) and app.env.docname:
        app.env.note_dependency(path)


def setup(app):
    app.connect("source-read", _inject_results)
    app.connect("autodoc-process-docstring", _note_source)
    app.connect("env-get-outdated", _results_outdated)
    # sphinx-mathjax-offline only copies files once the build is done, but does not say so:
    # without this, a parallel build (SPHINXOPTS="-j 2") warns, an error under -W.
    offline = app.extensions.get("sphinx-mathjax-offline")
    if offline is not None:
        offline.parallel_read_safe = offline.parallel_write_safe = True
