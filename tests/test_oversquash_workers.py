"""The over-squashing study's sweep and the fast budget: the same numbers for any number of
workers, a failing cell named, compiled training equal to eager (a killed worker and resume:
tests/test_executor.py)."""
import json

import pytest
import torch

from graphformer.datasets import TreeNeighborsMatch
from graphformer.studies.graph_tasks import (Budget, build_tree_model, train_graph_task,
                                                 warmup_cosine)
from graphformer.studies.executor import check_workers, run_cells

ARGS = ["--tasks", "tree", "--models", "gcn,gin", "--depths", "2", "--max-steps", "8",
        "--device", "cpu", "--no-plots"]

pytestmark = pytest.mark.usefixtures("ray_local")  # the sweeps run on one local Ray


@pytest.fixture
def cli(load_benchmark):
    return load_benchmark("oversquash")


def rows_of(out):
    rows = json.loads((out / "results.json").read_text())["rows"]
    for row in rows.values():
        row.pop("seconds")  # wall and CPU time, the only things that may differ
        row.pop("cpu_seconds", None)
    return rows


def test_fast_budget_rows_are_identical_for_one_and_two_workers(cli, tmp_path, capsys):
    cli.main(ARGS + ["--workers", "1", "--out", str(tmp_path / "one")])
    cli.main(ARGS + ["--workers", "2", "--out", str(tmp_path / "two")])
    one, two = rows_of(tmp_path / "one"), rows_of(tmp_path / "two")
    # the fast budget: 8 steps of the 76 graphs of depth 2 (batches of 256), 8 epochs
    assert {"tree/gcn/2/plain/0", "tree/gin/2/plain/0"} <= set(one)
    assert one["tree/gcn/2/plain/0"]["epochs"] == 8.0
    assert any("fully_adjacent" in key for key in one)  # the controls ran too
    assert one == two  # bit-identical, fully-adjacent runs included
    capsys.readouterr()


def test_an_exception_in_a_cell_is_reported_with_its_traceback():
    def work(payload, progress):
        if payload == 2:
            raise ValueError("cell two is broken")
        progress(1.0)
        return {"value": payload}

    for workers in (1, 2):
        done = {}
        failures = run_cells([("a", 1), ("b", 2), ("c", 3)], work, workers=workers,
                             on_done=lambda key, row: done.update({key: row}) or ())
        assert {k: r["value"] for k, r in done.items()} == {"a": 1, "c": 3}
        assert all(r["ran_on"]["executor"] == "ray" for r in done.values())
        assert [f.key for f in failures] == ["b"] and "cell two is broken" in failures[0].reason


def test_bad_worker_counts_are_refused(cli, tmp_path, capsys):
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit) as e:
            cli.main(ARGS + ["--workers", bad, "--out", str(tmp_path / "x")])
        assert e.value.code == 2
        assert f"--workers must be at least 1 (worker processes), got {bad}" in \
            capsys.readouterr().err
    with pytest.raises(TypeError, match="workers must be a positive int"):
        check_workers(1.5)


def test_fast_budget_schedule_and_settings():
    # warm-up from 1/w to 1, then cosine to 0 at the last step
    assert warmup_cosine(0, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 0.1) == pytest.approx(0.0)
    fast = Budget.fast()
    assert fast.schedule == "cosine" and fast.max_graphs is None and fast.patience is None
    for bad, message in ((dict(schedule="linear"), "unknown schedule 'linear'"),
                         (dict(batch_size=0), "batch_size must be a positive int, got 0"),
                         (dict(batch_size=2.5), "batch_size must be a positive int, got 2.5"),
                         (dict(max_epochs=True), "max_epochs must be a positive int, got True"),
                         (dict(max_seconds=float("nan")), "max_seconds must be a positive"),
                         (dict(lr=-1.0), "lr must be a positive finite number"),
                         (dict(lr=float("inf")), "lr must be a positive finite number"),
                         (dict(warmup=1.0), "warmup is a share")):
        with pytest.raises(ValueError, match=message):
            Budget(**bad).validate()


def test_fast_budget_schedule_is_what_training_uses(monkeypatch):
    # the learning rate of every optimizer step of a real training run follows the
    # warm-up and cosine, and the run stops at its last step
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    ds = TreeNeighborsMatch(2)
    budget = Budget(max_steps=10, eval_every=5, batch_size=16, max_graphs=None,
                    schedule="cosine", lr=4e-3, warmup=0.2, patience=None)
    torch.manual_seed(0)
    result = train_graph_task(build_tree_model("gat", ds), ds, budget)
    assert result["steps"] == 10
    assert seen == pytest.approx([4e-3 * warmup_cosine(s, 10, 0.2) for s in range(10)])
    assert seen[1] == pytest.approx(4e-3) and seen[-1] < 4e-4


@pytest.mark.parametrize("conv", ["gcn", "gat"])  # gat: trimmed batches
def test_compiled_training_equals_eager(conv):
    # dynamo's capture and AOT autograd (backend "aot_eager"), the same as inductor up to
    # its kernels, which take a minute to build on a CPU; the numbers must agree
    ds = TreeNeighborsMatch(2)
    budget = Budget(max_steps=4, eval_every=2, batch_size=32, max_graphs=None,
                    schedule="cosine", lr=5e-3, warmup=0.2)
    results, params = [], []
    for compile in (False, "aot_eager"):
        torch.manual_seed(0)
        model = build_tree_model(conv, ds)
        results.append(train_graph_task(model, ds, budget, compile=compile))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    eager, compiled = results
    assert compiled["steps"] == eager["steps"] == 4
    assert compiled["train_acc"] == eager["train_acc"]
    torch.testing.assert_close(params[1], params[0], rtol=1e-4, atol=1e-5)


def test_fully_adjacent_alone_runs_only_the_control(cli, tmp_path, capsys):
    cli.main(ARGS + ["--fully-adjacent", "--workers", "1", "--out", str(tmp_path / "fa")])
    assert set(rows_of(tmp_path / "fa")) == {"tree/gcn/2/fully_adjacent/0",
                                             "tree/gin/2/fully_adjacent/0"}
    capsys.readouterr()


def test_time_to_solve_refuses_flags_it_would_ignore(cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--time-to-solve", "fast", "--depths", "2", "--compile", "--batch-size", "8",
                  "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "it does not take --compile, --batch-size" in capsys.readouterr().err


def test_time_to_solve_run_writes_its_table(cli, tmp_path, capsys):
    out = tmp_path / "tts"
    cli.main(["--time-to-solve", "fast,full", "--depths", "2", "--models", "gin",
              "--max-epochs", "3", "--workers", "1", "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert set(rows) == {"tree/gin/2/plain/0@fast", "tree/gin/2/plain/0@full"}
    for row in rows.values():
        assert row["cpu_seconds"] > 0 and row["epochs"] > 0
    table = (out / "time_to_solve.md").read_text()
    assert "| gin | 2 | 0 |" in table and "CPU time" in table
    capsys.readouterr()
    # the same command again finds both runs done (the paper's batch for depth 2 included)
    cli.main(["--time-to-solve", "fast,full", "--depths", "2", "--models", "gin",
              "--max-epochs", "3", "--workers", "1", "--out", str(out)])
    assert "resuming: 2 of 2 runs already in" in capsys.readouterr().out


def test_time_to_solve_table_ratio_uses_cpu_time():
    from graphformer.studies.report import time_to_solve_table
    base = dict(model="gat", depth=3, seed=0)
    rows = [dict(base, budget_name="full", train_acc=1.0, seconds=900.0, cpu_seconds=600.0,
                 epochs=1200),
            dict(base, budget_name="fast", train_acc=1.0, seconds=200.0, cpu_seconds=100.0,
                 epochs=100),
            dict(base, model="ggnn", budget_name="full", train_acc=0.65, seconds=900.0,
                 cpu_seconds=880.0, epochs=1000),
            dict(base, model="ggnn", budget_name="fast", train_acc=0.44, seconds=400.0,
                 cpu_seconds=390.0, epochs=400)]
    table = time_to_solve_table(rows)
    assert "| gat | 3 | 0 | 600 s | 1200 | 100 s | 100 | 6.0x | 12.0x |" in table
    assert "| ggnn | 3 | 0 | not solved: 0.650 after 880 s | 1000 | not solved: 0.440 after " \
           "390 s | 400 | – | – |" in table
