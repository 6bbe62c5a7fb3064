r"""benchmarks/speed.py: a tiny run writes every group at both thread counts, and bad
command lines get a message that names the problem."""
import json

import pytest

TINY = ["--trees", "4", "--tree-depth", "2", "-T", "8", "--batch", "2", "--heads", "2",
        "--head-dim", "4", "--window", "3", "--doc-length", "3", "--edge-batch", "2",
        "--edge-length", "6", "--edge-dim", "3", "--repeats", "1", "--warmup", "0",
        "--no-memory", "--device", "cpu"]


def test_tiny_run_reports_both_thread_counts(load_benchmark, tmp_path, capsys, one_thread):
    speed = load_benchmark("speed")
    assert speed.main(TINY + ["--threads", "default,1", "--out", str(tmp_path)]) == 0
    rows = json.loads(next(tmp_path.glob("*.json")).read_text())["results"]
    groups = {r["group"] for r in rows}
    assert groups == set(speed.GROUPS)
    assert {r["default_threads"] for r in rows} == {True, False}
    assert all(r["threads"] == 1 for r in rows if not r["default_threads"])
    names = {r["candidate"] for r in rows}
    assert "AttentionConv edge, edge_dim" in names and "dense per-pair edge tensor" in names
    assert "torch's default" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--threads", "0"], "thread counts must be >= 1"),
    (["--threads", "two"], "counts or 'default'"),
    (["--trees", "-1"], "expected a positive int, got '-1'"),
    (["--doc-length", "0"], "expected a positive float"),
    (["--repeats", "0"], "expected a positive int"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--only", "tree,bogus"], "unknown group"),
    (["--only", ","], "at least one group"),
    (["--clock", "cpu"], "--clock cpu is meaningful with one thread only"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_command_lines(load_benchmark, argv, message, capsys):
    speed = load_benchmark("speed")
    with pytest.raises(SystemExit):
        speed.parse_args(argv)
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder(load_benchmark, tmp_path, capsys):
    speed = load_benchmark("speed")
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit):
        speed.parse_args(["--out", str(path)])
    assert "is a file, not a folder" in capsys.readouterr().err
