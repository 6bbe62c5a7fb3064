r"""Preparing a public corpus, offline: a small local file stands in for the download
(a ``file://`` URL goes through the same urllib path as the canonical https one)."""
import hashlib

import pytest

from graphformer.datasets import corpora
from graphformer.datasets.corpora import PublicCorpus, prepare_corpus

TEXT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture
def small(tmp_path, monkeypatch):
    src = tmp_path / "input.txt"
    src.write_bytes(TEXT)
    corpus = PublicCorpus("small", src.as_uri(), hashlib.sha256(TEXT).hexdigest(), len(TEXT),
                          "small.txt")
    monkeypatch.setitem(corpora.CORPORA, "small", corpus)
    return src


def test_tinyshakespeare_entry_matches_the_shared_copy():
    entry = corpora.CORPORA["tinyshakespeare"]
    assert entry.num_bytes == 1_115_394 and entry.url.startswith("https://")
    assert len(entry.sha256) == 64


def test_download_verifies_and_writes(small, tmp_path):
    path = prepare_corpus("small", tmp_path / "out")
    assert path == tmp_path / "out" / "small.txt" and path.read_bytes() == TEXT
    assert not list(path.parent.glob(".*.tmp"))


def test_local_source_is_copied(small, tmp_path):
    path = prepare_corpus("small", tmp_path / "out", source=small)
    assert path.read_bytes() == TEXT


def test_a_good_file_already_there_is_kept(small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.txt").write_bytes(TEXT)
    small.unlink()  # the source is gone: nothing is fetched again
    assert prepare_corpus("small", out).read_bytes() == TEXT


def test_a_corrupt_file_is_replaced(small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.txt").write_bytes(b"x" * len(TEXT))
    assert prepare_corpus("small", out).read_bytes() == TEXT


def test_checksum_and_size_mismatch_are_refused(small, tmp_path):
    other = tmp_path / "other.txt"
    other.write_bytes(TEXT.upper())
    with pytest.raises(ValueError, match="SHA-256 .* does not match"):
        prepare_corpus("small", tmp_path / "out", source=other)
    short = tmp_path / "short.txt"
    short.write_bytes(TEXT[:-1])
    with pytest.raises(ValueError, match="bytes, but small has"):
        prepare_corpus("small", tmp_path / "out", source=short)
    assert not (tmp_path / "out" / "small.txt").exists()


def test_no_network_says_how_to_work_offline(small, tmp_path):
    small.unlink()
    with pytest.raises(ConnectionError, match="could not download .*source=PATH"):
        prepare_corpus("small", tmp_path / "out")


def test_bad_names_and_paths(small, tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'nope'; known: .*tinyshakespeare"):
        prepare_corpus("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file to prepare small"):
        prepare_corpus("small", tmp_path, source=tmp_path / "missing.txt")


def test_command_line(load_benchmark, small, tmp_path, capsys):
    prepare = load_benchmark("prepare")
    assert prepare.main(["small", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "small.txt").read_bytes() == TEXT
    assert "benchmarks/lm.py --data" in capsys.readouterr().out
    assert prepare.main(["tinyshakespeare", "--source", str(small),
                         "--out", str(tmp_path / "o")]) == 2
    assert "bytes, but tinyshakespeare has" in capsys.readouterr().err
