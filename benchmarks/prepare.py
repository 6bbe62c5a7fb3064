r"""Prepares a public text corpus for ``benchmarks/lm.py``, as nanoGPT's ``prepare.py`` does:
downloads it from its canonical source when the machine is online, or copies a local file
(``--source``), verifies its size and SHA-256 and writes it into ``--out``.

Examples::

    python benchmarks/prepare.py tinyshakespeare                  # download (online)
    python benchmarks/prepare.py tinyshakespeare --source ../shared/data/tinyshakespeare.txt
    python benchmarks/lm.py --data data/tinyshakespeare.txt
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from graphformer.datasets import CORPORA, prepare_corpus


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("corpus", choices=sorted(CORPORA), help="the corpus to prepare")
    p.add_argument("--source", default=None,
                   help="a local copy (or a URL) to take it from instead of its canonical URL")
    p.add_argument("--out", default="data", help="the folder to write it into")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the network")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        path = prepare_corpus(args.corpus, args.out, source=args.source, timeout=args.timeout)
    except (ValueError, OSError) as err:  # ConnectionError and FileNotFoundError included
        print(f"prepare.py: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.corpus}: {path} (verified, {CORPORA[args.corpus].num_bytes:,} bytes)")
    print(f"train on it with: python benchmarks/lm.py --data {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
