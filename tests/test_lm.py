import csv
import json

import pytest
import torch


@pytest.fixture(scope="module")
def lm(load_benchmark):
    return load_benchmark("lm")


TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
        "--batch_size", "4", "--max_iters", "4", "--warmup", "1", "--eval_interval", "2",
        "--eval_iters", "2", "--log_interval", "1", "--sample_tokens", "10",
        "--num_chars", "20000", "--device", "cpu", "--quiet"]


def test_help(lm, capsys):
    with pytest.raises(SystemExit) as e:
        lm.main(["--help"])
    assert e.value.code == 0
    assert "--compare" in capsys.readouterr().out


def test_arch_names_map_to_configs(lm):
    args = lm.parse_args(TINY)
    cfgs = {a: lm.model_config(args, a, 30) for a in lm.ARCHS}
    assert (cfgs["gpt"].method, cfgs["gpt"].scheme) == ("gd", "lie_trotter")
    assert (cfgs["nesterov"].method, cfgs["nesterov"].v0) == ("nesterov", "embedding")
    assert (cfgs["nesterov0"].method, cfgs["nesterov0"].v0) == ("nesterov", "zero")
    assert cfgs["strang"].scheme == "strang" and cfgs["diff"].attention == "diff"
    assert cfgs["pause"].pause_every == 8 and cfgs["heavyball"].method == "heavyball"


def test_compare_writes_table_and_plot(lm, tmp_path):
    rows = lm.main(TINY + ["--compare", "gpt", "nesterov0", "--seeds", "0", "1",
                           "--out", str(tmp_path)])
    assert [r["arch"] for r in rows] == ["gpt", "nesterov0"]
    for name in ("compare.json", "compare.csv", "compare.md", "loss_curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "compare.json").read_text())
    assert len(data["runs"]) == 4
    for r in data["runs"]:
        run_dir = tmp_path / f"{r['arch']}-s{r['seed']}"
        assert {"ckpt.pt", "log.jsonl", "vocab.json", "result.json"} <= {
            p.name for p in run_dir.iterdir()}
        assert r["iters"] == 4 and r["best_val_loss"] < 5
    by = {r["arch"]: r for r in data["rows"]}
    assert by["gpt"]["seeds"] == [0, 1] and by["nesterov0"]["num_params"] > by["gpt"][
        "num_params"]
    with open(tmp_path / "compare.csv") as f:
        assert [r["arch"] for r in csv.DictReader(f)] == ["gpt", "nesterov0"]
    assert "| nesterov0 |" in (tmp_path / "compare.md").read_text()
    # different seeds give different runs; --resume of finished runs trains nothing more
    assert data["runs"][0]["best_val_loss"] != data["runs"][1]["best_val_loss"]
    again = lm.main(TINY + ["--compare", "gpt", "--seeds", "0", "--resume",
                            "--out", str(tmp_path)])
    assert again[0]["best_val_loss_mean"] == data["runs"][0]["best_val_loss"]
    with pytest.raises(ValueError, match="already exists"):
        lm.main(TINY + ["--arch", "gpt", "--out", str(tmp_path)])
    # --table: the table of the finished runs, nothing trained, missing runs left out
    ckpt = (tmp_path / "gpt-s0" / "ckpt.pt").read_bytes()
    rows = lm.main(TINY + ["--compare", "nesterov0", "gpt", "heavyball", "--seeds", "1", "0",
                           "--table", "--out", str(tmp_path)])
    assert [(r["arch"], r["seeds"]) for r in rows] == [("nesterov0", [1, 0]), ("gpt", [1, 0])]
    assert rows[1]["best_val_loss_mean"] == by["gpt"]["best_val_loss_mean"]
    assert (tmp_path / "gpt-s0" / "ckpt.pt").read_bytes() == ckpt
    assert not (tmp_path / "heavyball-s0").exists()
    assert "| params (nanoGPT) |" in (tmp_path / "compare.md").read_text()


def test_resume_of_finished_run_keeps_time_and_rate(lm, tmp_path):
    first = lm.main(TINY + ["--out", str(tmp_path)])[0]
    again = lm.main(TINY + ["--resume", "--out", str(tmp_path)])[0]
    assert again["iters"] == first["iters"] and again["train_time"] == first["train_time"]
    assert again["tokens_per_sec"] == pytest.approx(first["tokens_per_sec"])
    assert again["wall_time"] >= first["wall_time"] * 0.5


def test_bad_flags(lm, tmp_path):
    with pytest.raises(SystemExit):
        lm.parse_args(TINY + ["--table"])
    with pytest.raises(SystemExit):
        lm.parse_args(TINY + ["--resume", "--overwrite"])
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        lm.main(TINY + ["--compare", "gpt", "--table", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no such data file"):
        lm.main(TINY + ["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
    (tmp_path / "tiny.txt").write_text("to be or not")
    with pytest.raises(ValueError, match="block_size 16 is larger than the train split"):
        lm.main(TINY + ["--data", str(tmp_path / "tiny.txt"), "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("flags,match", [
    (["--min_lr=-1e-3"], "--min_lr: TrainConfig.min_lr must be a non-negative finite number"),
    (["--lr", "1e-5", "--min_lr", "1e-4"], "--min_lr: TrainConfig.min_lr .* is larger than"),
    (["--lr", "nan"], "--lr: TrainConfig.learning_rate must be a positive finite number"),
    (["--warmup", "-1"], "--warmup: TrainConfig.warmup_iters must be an int >= 0"),
    (["--max_iters", "0"], "--max_iters: TrainConfig.max_iters must be a positive int"),
    (["--beta2", "1"], r"--beta2: TrainConfig.beta2 must be in \[0, 1\)"),
    (["--peak_flops", "-1"], "--peak_flops: TrainConfig.peak_flops must be a positive"),
    (["--n_head", "3"], r"n_embd \(16\) must be divisible by n_head \(3\)"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    (["--val_fraction", "0"], r"--val_fraction must be in \(0, 1\)"),
    (["--num_chars", "0"], "--num_chars must be positive"),
    (["--compare", "gpt", "gpt"], "--compare names gpt more than once"),
    (["--compare", "gpt", "--seeds", "1", "1"], "--seeds names 1 more than once"),
    (["--arch", "pause", "--pause_every", "0"], "--pause_every must be positive"),
    (["--device", "gpu"], "--device gpu: unknown device 'gpu'; use auto, cpu, cuda"),
])
def test_bad_flags_are_refused_before_any_run(lm, tmp_path, capsys, flags, match):
    with pytest.raises(SystemExit) as e:
        lm.main(TINY + flags + ["--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:")
    import re
    assert re.search(match, err), err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_names_the_device_there(lm, tmp_path, capsys):
    with pytest.raises(SystemExit):
        lm.main(TINY + ["--device", "cuda", "--out", str(tmp_path)])
    assert ("--device cuda: device 'cuda' was asked for, but CUDA is not available here"
            in capsys.readouterr().err)


def test_default_min_lr_is_a_tenth_of_lr(lm, tmp_path):
    args = lm.parse_args(TINY)
    assert lm.train_config(args, 0, tmp_path).resolved().min_lr == 1e-4  # nanoGPT's value
    args = lm.parse_args(TINY + ["--lr", "1e-5"])
    assert lm.train_config(args, 0, tmp_path).resolved().min_lr == pytest.approx(1e-6)
