import json
import pickle

import numpy as np
import pytest
import torch

from graphformer.datasets import (
    STORY_SEPARATOR,
    BinCorpus,
    CharTokenizer,
    TextCorpus,
    generate_stories,
    load_corpus,
)


def test_generator_is_deterministic():
    a = generate_stories(20_000, seed=3)
    assert a == generate_stories(20_000, seed=3)
    assert a != generate_stories(20_000, seed=4)
    assert len(a) >= 20_000 and len(a) < 22_000
    stories = a.strip().split(STORY_SEPARATOR)
    assert generate_stories(num_stories=5, seed=3).strip().split(STORY_SEPARATOR) == stories[:5]
    with pytest.raises(ValueError, match="not both"):
        generate_stories(100, num_stories=2)


def test_generated_stories_are_consistent():
    # the hero's name recurs and a 'she' hero is never called 'he' in its opening
    for story in generate_stories(num_stories=50, seed=0).strip().split(STORY_SEPARATOR):
        first = story.split(".")[0]
        name = first.split("named ")[1]
        assert story.count(name) >= 3
        second = story.split(". ")[1]
        assert second.split()[0] in {"She", "He", "Every"}


def test_tokenizer_round_trip(tmp_path):
    text = "Hello, world!\nÜnïcødé ✓"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    tok.save(tmp_path / "vocab.json")
    back = CharTokenizer.load(tmp_path / "vocab.json")
    assert back == tok and back.encode(text) == ids
    other = CharTokenizer.from_text(text + "z")
    assert other != tok and "only in the second: ['z']" in tok.difference(other)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("xyz?")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(["a", "a"])


def test_text_corpus_split_and_batches():
    text = "abcdefghij" * 100  # 1000 characters
    corpus = TextCorpus(text, val_fraction=0.1)
    assert corpus.num_tokens("train") == 900 and corpus.num_tokens("val") == 100
    g = torch.Generator().manual_seed(0)
    x, y = corpus.get_batch("train", 4, 16, g)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # windows are contiguous text; y is x shifted
    for row_x, row_y in zip(x, y):
        s = corpus.tokenizer.decode(row_x)
        assert s in text and corpus.tokenizer.decode(row_y)[:-1] == s[1:]
    # the generator's state is the data position
    state = g.get_state()
    a = corpus.get_batch("val", 3, 8, g)
    g.set_state(state)
    b = corpus.get_batch("val", 3, 8, g)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_rank_slices_form_the_global_batch():
    corpus = TextCorpus(generate_stories(5000, seed=1))
    full = corpus.get_batch("train", 6, 12, torch.Generator().manual_seed(7))
    parts = [corpus.get_batch("train", 6, 12, torch.Generator().manual_seed(7), rank=r,
                              world_size=3) for r in range(3)]
    for i in range(2):
        assert torch.equal(full[i], torch.cat([p[i] for p in parts]))
    with pytest.raises(ValueError, match="not divisible"):
        corpus.get_batch("train", 5, 12, world_size=2)


def test_document_ids():
    text = "ab.\n\ncd.\n\nef."
    corpus = TextCorpus(text, val_fraction=0.2, doc_separator="\n\n")
    x, y, d = corpus.get_batch("train", 1, 9, torch.Generator().manual_seed(0),
                               return_doc_ids=True)
    doc_of = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2, "f": 2}
    for ch, doc in zip(corpus.tokenizer.decode(x[0]), d[0].tolist()):
        if ch in doc_of:
            assert doc == doc_of[ch]
    assert TextCorpus(text).get_batch("train", 1, 4, return_doc_ids=True)[2] is None


def test_block_size_larger_than_data():
    corpus = TextCorpus("x" * 50)
    with pytest.raises(ValueError, match=r"block_size 10 is larger than the val split"):
        corpus.get_batch("val", 1, 10)
    with pytest.raises(ValueError, match="val split"):
        corpus.check_block_size(10)
    with pytest.raises(ValueError, match="unknown split"):
        corpus.get_batch("test", 1, 2)


def test_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        TextCorpus.from_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt: the text file is empty"):
        TextCorpus.from_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8 text"):
        TextCorpus.from_file(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("héllo wörld " * 10, encoding="utf-8")
    corpus = load_corpus(tmp_path / "ok.txt")
    assert isinstance(corpus, TextCorpus) and corpus.vocab_size == len(set("héllo wörld "))
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_corpus(tmp_path / "nothing_here")


def _write_bins(root, train, val, meta=None):
    root.mkdir(exist_ok=True)
    np.array(train, dtype=np.uint16).tofile(root / "train.bin")
    np.array(val, dtype=np.uint16).tofile(root / "val.bin")
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))


def test_bin_corpus_reads_tokens(tmp_path):
    train = np.arange(100) % 50
    val = (np.arange(40) * 7) % 50
    _write_bins(tmp_path / "d", train, val, {"vocab_size": 50})
    corpus = load_corpus(tmp_path / "d")
    assert isinstance(corpus, BinCorpus) and corpus.vocab_size == 50
    assert corpus.num_tokens("train") == 100 and corpus.num_tokens("val") == 40
    x, y = corpus.get_batch("val", 5, 8, torch.Generator().manual_seed(1))
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        i = int(np.flatnonzero(val == row_x[0])[0])  # values are distinct in val
        assert (row_x == val[i:i + 8]).all() and (row_y == val[i + 1:i + 9]).all()
    # nanoGPT's meta.pkl with itos gives a tokenizer
    _write_bins(tmp_path / "c", [0, 1, 2, 1, 0] * 4, [2, 1, 0] * 4)
    with open(tmp_path / "c" / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"},
                     "stoi": {"a": 0, "b": 1, "c": 2}}, f)
    c = BinCorpus(tmp_path / "c")
    assert c.tokenizer.decode(c.get_batch("train", 1, 5)[0][0]) in "abcba" * 4
    # no meta: the vocabulary size is an argument
    _write_bins(tmp_path / "n", [1, 2, 3] * 5, [3, 2, 1] * 5)
    with pytest.raises(ValueError, match="vocab_size"):
        BinCorpus(tmp_path / "n")
    assert BinCorpus(tmp_path / "n", vocab_size=4).vocab_size == 4
    with pytest.raises(ValueError, match="outside the vocabulary of 3"):
        BinCorpus(tmp_path / "n", vocab_size=3).get_batch("train", 2, 6)


def test_bin_corpus_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        BinCorpus(tmp_path / "nope")
    _write_bins(tmp_path / "odd", [1, 2, 3], [1, 2], {"vocab_size": 4})
    with open(tmp_path / "odd" / "train.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match=r"train.bin: 7 bytes is odd"):
        BinCorpus(tmp_path / "odd")
    _write_bins(tmp_path / "empty", [], [1, 2], {"vocab_size": 4})
    with pytest.raises(ValueError, match="train.bin: the token file is empty"):
        BinCorpus(tmp_path / "empty")
    _write_bins(tmp_path / "noval", [1, 2], [1, 2], {"vocab_size": 4})
    (tmp_path / "noval" / "val.bin").unlink()
    with pytest.raises(FileNotFoundError, match="val.bin: missing"):
        BinCorpus(tmp_path / "noval")
    _write_bins(tmp_path / "short", [1, 2, 3, 1, 2, 3], [1, 2], {"vocab_size": 4})
    with pytest.raises(ValueError, match="block_size 4 is larger than the val split"):
        BinCorpus(tmp_path / "short").get_batch("val", 1, 4)
    with pytest.raises(ValueError, match="train.bin: a .bin token file .* pass the folder"):
        load_corpus(tmp_path / "short" / "train.bin")


def test_document_ids_feed_the_causal_graph():
    from graphformer.graph import CausalGraph

    corpus = TextCorpus.generated(num_stories=6, seed=0)
    x, _, d = corpus.get_batch("train", 3, 400, torch.Generator().manual_seed(0),
                               return_doc_ids=True)
    graph = CausalGraph.from_lengths([400] * 3).with_documents(d.flatten())
    mask = graph.dense_mask()
    same = d[:, :, None] == d[:, None, :]
    causal = torch.ones(400, 400, dtype=torch.bool).tril()
    assert torch.equal(mask, same & causal)
    assert (d[:, -1] > d[:, 0]).all()  # 400 characters span a story boundary
