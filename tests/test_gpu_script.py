r"""``benchmarks/gpu.py`` without a GPU: its refusal, and the pieces that plan and read the
GPU run (the rehearsal of every step, ``benchmarks/gpu.sh OUT --dry-run``, runs in CI from
``.ci/run``: it takes about a minute, too long for the test suite)."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu(load_benchmark):
    return load_benchmark("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_gpu_one_line_and_nonzero_exit(gpu, tmp_path, capsys):
    assert gpu.main([str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU here" in err and "--dry-run" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_shell_script_without_gpu_one_line_and_nonzero_exit(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no NVIDIA GPU" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_bad_flags(gpu, tmp_path):
    for flags in (["--skip", "lunch"], ["--budget", "0"], ["--data", str(tmp_path / "no")]):
        with pytest.raises(SystemExit):
            gpu.parse_args([str(tmp_path)] + flags)


def test_plan_iters(gpu):
    # 100,000 tokens/s, 16,384 tokens a step: 6.1 steps/s; 100 s less a fifth for evaluation
    assert gpu.plan_iters(100_000, 100, 16_384, 5000, 250, eval_share=0.2) == 250
    assert gpu.plan_iters(1e6, 100, 16_384, 5000, 250, eval_share=0.2) == 4750
    assert gpu.plan_iters(1e7, 100, 16_384, 5000, 250, eval_share=0.2) == 5000
    assert gpu.plan_iters(None, 100, 16_384, 5000, 250, eval_share=0.2) == 250


def test_read_lm_of_a_run_cut_by_its_time_box(gpu, tmp_path):
    recs = [{"event": "start", "iter": 0}, {"event": "eval", "iter": 0, "val_loss": 4.2}]
    recs += [{"event": "train", "iter": i, "loss": 3.0, "tokens_per_sec": 100.0 * i,
              "mfu": 0.01 * i} for i in range(1, 11)]
    recs += [{"event": "eval", "iter": 10, "val_loss": 2.5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs)
                                        + '{"event": "tra')  # a line torn by the kill
    got = gpu.read_lm(tmp_path)
    assert got["finished"] is False and got["iters"] == 10 and got["best_val_loss"] == 2.5
    assert got["tokens_per_sec_steady"] == 650.0 and got["mfu"] == pytest.approx(0.065)
    assert gpu.read_lm(tmp_path / "none")["error"].startswith("no result.json")


def test_pytest_summary(gpu, tmp_path):
    junit = tmp_path / "j.xml"
    junit.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                     '<testcase classname="t" name="a"/><testcase classname="t" name="b">'
                     '<failure message="boom"/></testcase><testcase classname="t" name="c">'
                     '<skipped/></testcase></testsuite></testsuites>')
    got = gpu.pytest_summary(junit)
    assert (got["passed"], got["failures"], got["skipped"]) == (1, 1, 1)
    assert got["failed"] == ["t::b: boom"]


def test_threshold_sweep_runs_on_cpu(gpu):
    r = gpu.sweep_thresholds("cpu", "float32", tokens=32, length=16, doc_lengths=[4],
                             lengths=[8], window=4, heads=1, head_dim=4, repeats=1,
                             warmup=0, seed=0)
    row = r["density_sweep"][0]
    assert 0 < row["density"] < 1 and row["fused"] == "sdpa" and row["edge_ms"] > 0
    assert r["length_sweep"] == [] and r["current"]["flex_min_length"] > 0
