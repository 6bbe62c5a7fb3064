r"""Text corpora for language modelling on the causal DAG.

Three sources of tokens, one batching interface:

* :func:`generate_stories`: a deterministic generated corpus of simple stories, the default
  corpus, so that a benchmark runs on a fresh machine with no data;
* :class:`TextCorpus`: plain UTF-8 text with a character-level vocabulary
  (:class:`CharTokenizer`), the last ``val_fraction`` of the characters held out for validation,
  as nanoGPT's ``shakespeare_char`` does;
* :class:`BinCorpus`: nanoGPT-style ``train.bin`` / ``val.bin`` files of ``uint16`` token ids,
  for corpora tokenized elsewhere.

Every corpus offers :meth:`Corpus.get_batch`, which draws random windows from a split with a
:class:`torch.Generator`: the generator's state *is* the data position, so saving and restoring it
continues a run exactly, and every process of a distributed run can draw the same global batch
and take its own slice of it.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from graphformer.checks import check_int
from graphformer.datasets.stories import STORY_SEPARATOR, generate_stories
from graphformer.io import write_text_atomic

__all__ = [
    "STORY_SEPARATOR",
    "generate_stories",
    "CharTokenizer",
    "Corpus",
    "TextCorpus",
    "BinCorpus",
    "load_corpus",
]

# --------------------------------------------------------------------------------------------
# Character-level tokenizer
# --------------------------------------------------------------------------------------------

class CharTokenizer:
    r"""A character-level vocabulary: token ``i`` is the ``i``-th distinct character.

    Built from a text with the characters sorted, as nanoGPT's ``shakespeare_char`` does, so the
    same text gives the same vocabulary. Two tokenizers are equal when their vocabularies are;
    save it with a run (:meth:`save`, :meth:`to_dict`) so that a resumed run can check that it
    reads the text the same way.

    Args:
        chars (Sequence[str]): the vocabulary, one character per token id, no duplicates.

    Example:
        >>> from graphformer.datasets import CharTokenizer
        >>> tok = CharTokenizer.from_text("hello world")
        >>> tok.encode("hold"), tok.decode(tok.encode("hold"))
        ([3, 5, 4, 1], 'hold')
    """

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        bad = [ch for ch in chars if not isinstance(ch, str) or len(ch) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            dup = sorted({ch for ch in chars if chars.count(ch) > 1})
            raise ValueError(f"vocabulary has duplicate characters {dup!r}")
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        r"""The sorted set of characters of :obj:`text`."""
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        r"""Token ids of :obj:`text`; a character outside the vocabulary raises ValueError."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            missing = sorted(set(text) - set(self.stoi))
            raise ValueError(f"text has {len(missing)} character(s) not in the vocabulary of "
                             f"{self.vocab_size}: {missing[:10]!r}") from e

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        r"""The text of token ids (a list or a 1-D tensor)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self.chars):
                raise ValueError(f"token id {i} is outside the vocabulary of {self.vocab_size}")
            out.append(self.chars[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("type") != "char" or "chars" not in d:
            raise ValueError(f"not a CharTokenizer dict: keys {sorted(d)}")
        return cls(list(d["chars"]))

    def save(self, path: str | os.PathLike) -> None:
        r"""Write the vocabulary as JSON."""
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        r"""Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such vocabulary file")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON vocabulary ({e})") from e
        return cls.from_dict(d)

    def difference(self, other: "CharTokenizer") -> str:
        r"""A short human-readable description of how two vocabularies differ ("" if equal)."""
        if self == other:
            return ""
        a, b = set(self.chars), set(other.chars)
        parts = [f"{self.vocab_size} vs {other.vocab_size} symbols"]
        if a - b:
            parts.append(f"only in the first: {sorted(a - b)[:10]!r}")
        if b - a:
            parts.append(f"only in the second: {sorted(b - a)[:10]!r}")
        if a == b:
            parts.append("same symbols in a different order")
        return "; ".join(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash("".join(self.chars))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------

class Corpus:
    r"""Base class of the corpora: a train and a val split of token ids, batched as random
    windows.

    Subclasses set :attr:`vocab_size`, :attr:`tokenizer` (or ``None``), :attr:`name`, and
    implement :meth:`num_tokens` and :meth:`_windows`.

    Example:
        >>> from graphformer.datasets import Corpus, TextCorpus
        >>> corpus = TextCorpus("to be or not to be", val_fraction=0.25)
        >>> isinstance(corpus, Corpus), corpus.describe()
        (True, {'name': 'text', 'vocab_size': 7, 'train_tokens': 13, 'val_tokens': 5})
    """

    SPLITS = ("train", "val")
    vocab_size: int
    tokenizer: CharTokenizer | None = None
    name: str = "corpus"

    def num_tokens(self, split: str) -> int:
        raise NotImplementedError

    def _windows(self, split: str, starts: Tensor, length: int) -> Tensor:
        r"""Token ids ``[len(starts), length]`` (int64) of the windows that start at
        :obj:`starts`."""
        raise NotImplementedError

    def _doc_windows(self, split: str, starts: Tensor, length: int) -> Tensor | None:
        r"""Document ids of the same windows, or ``None`` if the corpus has no documents."""
        return None

    def _check_split(self, split: str) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits are {self.SPLITS}")

    def check_block_size(self, block_size: int) -> None:
        r"""Raise ValueError when a split is too short for windows of :obj:`block_size`."""
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        for split in self.SPLITS:
            n = self.num_tokens(split)
            if n < block_size + 1:
                raise ValueError(
                    f"block_size {block_size} is larger than the {split} split of {self.name} "
                    f"({n} tokens; a window needs block_size + 1 = {block_size + 1})")

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None, *, rank: int = 0,
                  world_size: int = 1, return_doc_ids: bool = False,
                  device: torch.device | str | None = None):
        r"""Random windows ``(x, y)`` of a split, ``y`` being ``x`` shifted by one token.

        The start of every window of the **global** batch of :obj:`batch_size` rows is drawn
        from :obj:`generator`; the process of rank :obj:`rank` out of :obj:`world_size` returns
        rows ``rank * b : (rank + 1) * b`` with ``b = batch_size // world_size``. Every process
        thus advances its generator the same way, and the processes together see exactly the
        batch one process would see.

        Args:
            split (str): ``"train"`` or ``"val"``.
            batch_size (int): rows of the global batch.
            block_size (int): tokens per window.
            generator (torch.Generator, optional): the source of the window starts (a CPU
                generator). Its state is the data position of a run.
            rank (int): this process's rank. (default: ``0``)
            world_size (int): number of processes; must divide :obj:`batch_size`.
                (default: ``1``)
            return_doc_ids (bool): also return ``[b, block_size]`` document ids of the inputs
                (for the document rule of :class:`~graphformer.graph.CausalGraph`); ``None``
                when the corpus has no documents. (default: ``False``)
            device (torch.device, optional): where to put the tensors.

        Returns:
            ``(x, y)`` contiguous int64 tensors ``[b, block_size]``, or ``(x, y, doc_ids)``.
        """
        self._check_split(split)
        batch_size = check_int("batch_size", batch_size, 1)
        block_size = check_int("block_size", block_size, 1)
        world_size = check_int("world_size", world_size, 1)
        rank = check_int("rank", rank)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range for world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the world size "
                             f"{world_size}")
        n = self.num_tokens(split)
        if n < block_size + 1:
            raise ValueError(
                f"block_size {block_size} is larger than the {split} split of {self.name} "
                f"({n} tokens; a window needs block_size + 1 = {block_size + 1})")
        starts = torch.randint(n - block_size, (batch_size,), generator=generator)
        b = batch_size // world_size
        starts = starts[rank * b:(rank + 1) * b]
        w = self._windows(split, starts, block_size + 1)
        # contiguous, as nanoGPT's get_batch returns them: a model may ``.view`` its targets
        x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
        out = [x, y]
        if return_doc_ids:
            d = self._doc_windows(split, starts, block_size)
            out.append(d)
        if device is not None:
            out = [t.to(device, non_blocking=True) if t is not None else None for t in out]
        return tuple(out)

    def describe(self) -> dict:
        r"""A JSON-able summary (name, vocabulary size, tokens per split)."""
        return {"name": self.name, "vocab_size": self.vocab_size,
                **{f"{s}_tokens": self.num_tokens(s) for s in self.SPLITS}}

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.name!r}, vocab_size={self.vocab_size}, "
                f"train={self.num_tokens('train')}, val={self.num_tokens('val')})")


def _read_utf8(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such text file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"{path}: the text file is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                         f"{e.start}: {e.reason})") from e


class TextCorpus(Corpus):
    r"""A character-level corpus of one text: the first ``1 - val_fraction`` of the characters
    for training, the rest for validation (as nanoGPT's ``shakespeare_char``).

    Args:
        text (str): the text itself (use :meth:`from_file` for a file, :meth:`generated` for the
            generated stories).
        val_fraction (float): share of the characters, at the end, held out for validation.
            (default: ``0.1``)
        tokenizer (CharTokenizer, optional): the vocabulary; built from :obj:`text` if not given
            (pass the saved one of a run to read a text the same way).
        doc_separator (str, optional): text that ends a document (e.g. :data:`STORY_SEPARATOR`);
            gives the windows document ids for the document rule of
            :class:`~graphformer.graph.CausalGraph`.
        name (str): a name for messages and logs. (default: ``"text"``)

    Example:
        >>> import torch
        >>> from graphformer.datasets import TextCorpus
        >>> corpus = TextCorpus("hello world, hello graph", val_fraction=0.25)
        >>> corpus
        TextCorpus('text', vocab_size=12, train=18, val=6)
        >>> x, y = corpus.get_batch("train", 2, 4, torch.Generator().manual_seed(0))
        >>> corpus.tokenizer.decode(x[0]), corpus.tokenizer.decode(y[0])  # y: x one ahead
        ('o wo', ' wor')
    """

    def __init__(self, text: str, val_fraction: float = 0.1,
                 tokenizer: CharTokenizer | None = None, doc_separator: str | None = None,
                 name: str = "text"):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__} (use "
                            f"TextCorpus.from_file for a path)")
        if not text:
            raise ValueError(f"{name}: the text is empty")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.name = name
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer.from_text(text)
        self.vocab_size = self.tokenizer.vocab_size
        data = torch.tensor(self.tokenizer.encode(text), dtype=torch.int64)
        n_train = int(len(data) * (1.0 - val_fraction))
        self.val_fraction = val_fraction
        self.data = {"train": data[:n_train], "val": data[n_train:]}
        self.doc_ids = None
        if doc_separator:
            doc = torch.zeros(len(text), dtype=torch.int64)
            start, k = 0, len(doc_separator)
            while (i := text.find(doc_separator, start)) >= 0:
                if i + k < len(text):
                    doc[i + k] += 1  # a new document starts after the separator
                start = i + k
            doc = doc.cumsum(0)
            self.doc_ids = {"train": doc[:n_train], "val": doc[n_train:]}

    @classmethod
    def from_file(cls, path: str | os.PathLike, val_fraction: float = 0.1,
                  tokenizer: CharTokenizer | None = None,
                  doc_separator: str | None = None) -> "TextCorpus":
        r"""Read a UTF-8 text file."""
        path = Path(path)
        return cls(_read_utf8(path), val_fraction, tokenizer, doc_separator, name=path.name)

    @classmethod
    def generated(cls, num_chars: int | None = None, *, num_stories: int | None = None,
                  seed: int = 0, val_fraction: float = 0.1,
                  tokenizer: CharTokenizer | None = None) -> "TextCorpus":
        r"""The stories of :func:`generate_stories`, with their documents."""
        text = generate_stories(num_chars, num_stories=num_stories, seed=seed)
        return cls(text, val_fraction, tokenizer, doc_separator=STORY_SEPARATOR,
                   name=f"stories(seed={seed}, chars={len(text)})")

    def num_tokens(self, split: str) -> int:
        self._check_split(split)
        return len(self.data[split])

    def _windows(self, split: str, starts: Tensor, length: int) -> Tensor:
        return self.data[split][starts[:, None] + torch.arange(length)]

    def _doc_windows(self, split: str, starts: Tensor, length: int) -> Tensor | None:
        if self.doc_ids is None:
            return None
        return self.doc_ids[split][starts[:, None] + torch.arange(length)]


class BinCorpus(Corpus):
    r"""A corpus tokenized elsewhere: nanoGPT-style ``train.bin`` and ``val.bin`` files of
    ``uint16`` token ids in one folder, read through :class:`numpy.memmap` (nothing is loaded
    into memory).

    The vocabulary size comes from ``meta.json`` (``{"vocab_size": ...}``) or nanoGPT's
    ``meta.pkl`` in the folder, else from :obj:`vocab_size`. When the meta file also holds the
    characters (nanoGPT's ``itos``, or ``"chars"`` in ``meta.json``) the corpus gets a
    :class:`CharTokenizer` for decoding samples. ``meta.pkl`` is a pickle: read only folders
    you trust.

    Args:
        root (str or PathLike): the folder.
        vocab_size (int, optional): the vocabulary size when the folder has no meta file.
        eot_token (int, optional): the token that ends a document (e.g. 50256 for GPT-2);
            gives the windows document ids.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from graphformer.datasets import BinCorpus
        >>> root = Path(tempfile.mkdtemp()) / "counting"
        >>> root.mkdir()
        >>> np.arange(100, dtype=np.uint16).tofile(root / "train.bin")  # token ids 0..99
        >>> np.arange(20, dtype=np.uint16).tofile(root / "val.bin")
        >>> corpus = BinCorpus(root, vocab_size=100)
        >>> x, y = corpus.get_batch("val", 3, 8)
        >>> corpus, bool((y == x + 1).all())
        (BinCorpus('counting', vocab_size=100, train=100, val=20), True)
    """

    def __init__(self, root: str | os.PathLike, vocab_size: int | None = None,
                 eot_token: int | None = None):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such data folder")
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder (BinCorpus reads train.bin/val.bin in a "
                             f"folder)")
        self.root = root
        self.name = root.name or str(root)
        self.data = {}
        for split in self.SPLITS:
            path = root / f"{split}.bin"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing (a BinCorpus folder needs "
                                        f"train.bin and val.bin)")
            size = path.stat().st_size
            if size == 0:
                raise ValueError(f"{path}: the token file is empty")
            if size % 2:
                raise ValueError(f"{path}: {size} bytes is odd, so it is not a file of uint16 "
                                 f"token ids (truncated or another format?)")
            self.data[split] = np.memmap(path, dtype=np.uint16, mode="r")
        self.tokenizer = None
        meta = self._read_meta(root)
        if meta.get("vocab_size") is not None:
            meta_size = meta["vocab_size"]
            if isinstance(meta_size, bool) or not isinstance(meta_size, int):
                raise ValueError(f"{root}: the meta file's vocab_size must be an integer, got "
                                 f"{meta_size!r} ({type(meta_size).__name__})")
            if vocab_size is not None and vocab_size != meta["vocab_size"]:
                raise ValueError(f"{root}: vocab_size={vocab_size} was given but the meta file "
                                 f"says {meta['vocab_size']}")
            vocab_size = int(meta["vocab_size"])
        if vocab_size is None:
            raise ValueError(f"{root}: no meta.json or meta.pkl with a vocab_size; pass "
                             f"vocab_size=")
        if not 1 <= vocab_size <= 65536:
            raise ValueError(f"{root}: vocab_size {vocab_size} does not fit uint16 token ids "
                             f"(1..65536)")
        self.vocab_size = vocab_size
        chars = meta.get("chars")
        if chars is None and isinstance(meta.get("itos"), dict):
            itos = meta["itos"]
            chars = [itos[i] for i in range(len(itos))] if all(
                i in itos for i in range(len(itos))) else None
        if chars is not None and len(chars) == vocab_size:
            self.tokenizer = CharTokenizer(list(chars))
        self.eot_token = eot_token

    @staticmethod
    def _read_meta(root: Path) -> dict:
        if (root / "meta.json").is_file():
            try:
                meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{root / 'meta.json'}: not valid JSON ({e})") from e
            if not isinstance(meta, dict):
                raise ValueError(f"{root / 'meta.json'}: expected a JSON object")
            return meta
        if (root / "meta.pkl").is_file():
            with open(root / "meta.pkl", "rb") as f:
                meta = pickle.load(f)
            if not isinstance(meta, dict):
                raise ValueError(f"{root / 'meta.pkl'}: expected a pickled dict")
            return meta
        return {}

    def num_tokens(self, split: str) -> int:
        self._check_split(split)
        return len(self.data[split])

    def _windows(self, split: str, starts: Tensor, length: int) -> Tensor:
        data = self.data[split]
        w = torch.from_numpy(np.stack([data[i:i + length] for i in starts.tolist()])
                             .astype(np.int64))
        if w.numel() and int(w.max()) >= self.vocab_size:
            raise ValueError(f"{self.root / (split + '.bin')}: token id {int(w.max())} is "
                             f"outside the vocabulary of {self.vocab_size}")
        return w

    def _doc_windows(self, split: str, starts: Tensor, length: int) -> Tensor | None:
        if self.eot_token is None:
            return None
        x = self._windows(split, starts, length)
        # a document ends with its end-of-text token; ids are relative to the window
        ends = (x == self.eot_token).to(torch.int64)
        return torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], 1).cumsum(1)


def load_corpus(data: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                vocab_size: int | None = None, seed: int = 0,
                num_chars: int | None = None,
                tokenizer: CharTokenizer | None = None) -> Corpus:
    r"""The corpus a command line names: ``None`` (or ``"stories"``) for the generated stories,
    a folder for :class:`BinCorpus`, a file for :class:`TextCorpus`.

    Args:
        data (str or PathLike, optional): what to read.
        val_fraction (float): validation share of a text. (default: ``0.1``)
        vocab_size (int, optional): for a :class:`BinCorpus` without a meta file.
        seed (int): seed of the generated stories. (default: ``0``)
        num_chars (int, optional): size of the generated stories (default about 1 MB).
        tokenizer (CharTokenizer, optional): a saved vocabulary for a text corpus.

    Example:
        >>> from graphformer.datasets import load_corpus
        >>> corpus = load_corpus(None, num_chars=20_000)   # the generated stories
        >>> x, y = corpus.get_batch("train", 4, 16)
        >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
        (torch.Size([4, 16]), True)
    """
    if data is None or str(data) == "stories":
        return TextCorpus.generated(num_chars, seed=seed, val_fraction=val_fraction,
                                    tokenizer=tokenizer)
    path = Path(data)
    if path.is_dir():
        return BinCorpus(path, vocab_size=vocab_size)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file or folder")
    if path.suffix == ".bin":
        raise ValueError(f"{path}: a .bin token file is read with its split partner: pass the "
                         f"folder that holds train.bin and val.bin")
    return TextCorpus.from_file(path, val_fraction, tokenizer)
