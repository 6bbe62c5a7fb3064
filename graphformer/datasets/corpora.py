r"""Public text corpora for language modelling, obtained the way nanoGPT's ``prepare.py``
does: downloaded once from their canonical source when the machine is online, or copied
from a local file, and in both cases verified by checksum before anything reads them.

Nothing here runs unless a user asks for it: the tests, CI and the default runs never
download (they use the generated stories or a local file).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..io import atomic_write

__all__ = ["PublicCorpus", "CORPORA", "prepare_corpus"]


@dataclass(frozen=True)
class PublicCorpus:
    r"""A public text file: where it comes from and what it must hash to.

    Args:
        name (str): the name a command line uses.
        url (str): its canonical source.
        sha256 (str): the SHA-256 of the file, hex.
        num_bytes (int): its size, checked before the hash.
        filename (str): the file written into the output folder.

    Example:
        >>> from graphformer.datasets import CORPORA
        >>> corpus = CORPORA["tinyshakespeare"]      # what prepare_corpus checks it against
        >>> corpus.filename, corpus.num_bytes, corpus.sha256[:12]
        ('tinyshakespeare.txt', 1115394, '86c4e6aa9db7')
    """
    name: str
    url: str
    sha256: str
    num_bytes: int
    filename: str


#: The corpora :func:`prepare_corpus` knows, by name. tinyshakespeare is Karpathy's
#: char-rnn file (public domain), the one nanoGPT's ``shakespeare_char`` prepares.
CORPORA = {
    "tinyshakespeare": PublicCorpus(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
            "tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        num_bytes=1_115_394,
        filename="tinyshakespeare.txt",
    ),
}


def _check(data: bytes, corpus: PublicCorpus, origin: str) -> None:
    if len(data) != corpus.num_bytes:
        raise ValueError(f"{origin}: {len(data):,} bytes, but {corpus.name} has "
                         f"{corpus.num_bytes:,}: not the {corpus.name} file")
    digest = hashlib.sha256(data).hexdigest()
    if digest != corpus.sha256:
        raise ValueError(f"{origin}: SHA-256 {digest} does not match {corpus.name}'s "
                         f"{corpus.sha256}: the file is corrupt or another text")


def _download(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConnectionError(
            f"could not download {url} ({reason}); with no network, pass a local copy "
            f"with source=PATH (--source PATH on the command line)") from None


def prepare_corpus(name: str, out_dir: Union[str, os.PathLike] = "data", *,
                   source: Optional[Union[str, os.PathLike]] = None,
                   timeout: float = 60.0) -> Path:
    r"""Puts the public corpus ``name`` into ``out_dir`` and returns its path.

    A file already there that passes the checksum is kept. Otherwise the file comes from
    ``source`` (a local copy, or a URL) or, by default, from the corpus's canonical URL;
    it is verified by size and SHA-256 and written atomically, so an interrupted download
    never leaves a partial file behind.

    Args:
        name (str): a key of :data:`CORPORA`, e.g. ``"tinyshakespeare"``.
        out_dir (str or PathLike): the folder to write into. (default: ``"data"``)
        source (str or PathLike, optional): a local file or a URL to take it from.
        timeout (float): seconds to wait for the network. (default: ``60``)

    Example:
        >>> import tempfile
        >>> from graphformer.datasets import prepare_corpus
        >>> with tempfile.TemporaryDirectory() as out:  # doctest: +SKIP
        ...     path = prepare_corpus("tinyshakespeare", out)  # needs the network
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    target = Path(out_dir) / corpus.filename
    if target.is_file():
        try:
            _check(target.read_bytes(), corpus, str(target))
            return target
        except ValueError:
            pass  # replaced below
    origin = str(source) if source is not None else corpus.url
    if source is not None and "://" not in str(source):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file to prepare {name} from")
        data = path.read_bytes()
    else:
        data = _download(origin, timeout)
    _check(data, corpus, origin)
    try:
        atomic_write(target, lambda f: f.write(data), binary=True)
    except OSError as err:
        raise OSError(f"cannot write {target}: {err.strerror or err}") from None
    return target

