import pytest


def test_help_and_a_missing_checkout(load_benchmark, tmp_path, capsys):
    vs = load_benchmark("vs_nanogpt")
    with pytest.raises(SystemExit) as e:
        vs.main(["--help"])
    assert e.value.code == 0 and "--nanogpt" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        vs.main(["--nanogpt", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "no model.py there" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
