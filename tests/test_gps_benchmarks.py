r"""The molecules study's timing command lines on a tiny molecular set: benchmarks/
gps_step.py (one training step of each model) and benchmarks/gps_epoch.py (one epoch's
parts) write their files and tables; the study collates each epoch's batches once for
every model, and its AdamW (multi-tensor) equals the per-tensor loop bit for bit."""
import importlib.util
import json

import pytest
import torch

pytest.importorskip("rdkit", reason="RDKit is not installed: pip install "
                                    "'graphformer[molecules]'")
if importlib.util.find_spec("moses") is None:
    pytest.skip("molsets is not installed: pip install --no-deps molsets "
                "(make .venv/bin/.installed does it)", allow_module_level=True)

from graphformer.studies import molecules as study  # noqa: E402

SIZES = dict(train_size=24, val_size=8, test_size=8, walk_length=4, pe_channels=4,
             hidden=16, layers=1, heads=2, batch_size=8, memory_batch=8, epochs=2)
TINY = [arg for k, v in SIZES.items() for arg in ("--" + k.replace("_", "-"), str(v))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    r"""The tiny set, built once for the module (about 5 CPU s)."""
    root = tmp_path_factory.mktemp("molecules_data")
    study.load_splits(str(root), study.Settings(**SIZES))
    return root


def test_gps_step_writes_its_table_and_json(load_benchmark, data, tmp_path, capsys,
                                            one_thread):
    step = load_benchmark("gps_step")
    step.main(TINY + ["--steps", "2", "--rounds", "2", "--data", str(data), "--device",
                      "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "gps_step_b8_p0.5.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == set(study.MODELS)
    assert rows["gpsconv"]["ratio"] == 1.0
    for name, r in rows.items():
        assert r["ms_per_step"] > 0 and r["peak_mib"] > 0 and len(result["times_s"][name]) == 2
        assert r["speedup"] == pytest.approx(1 / r["ratio"])
        assert f"{name} " in out and "ms/step" in out
    assert len(result["nodes"]) == 2 and result["settings"]["hidden"] == 16


def test_gps_epoch_writes_the_breakdown(load_benchmark, data, tmp_path, capsys, one_thread):
    epoch = load_benchmark("gps_epoch")
    epoch.main(TINY + ["--steps", "2", "--rounds", "1", "--data", str(data), "--device",
                       "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "gps_epoch.json").read_text())
    assert result["batches"] == 3 and result["timed_steps"] == 2
    assert result["collate_s"] > 0 and result["eval_collate_s"] > 0
    assert [r["model"] for r in result["rows"]] == ["graphformer", "gpsconv"]
    for r in result["rows"]:
        assert r["train_s"] > 0 and r["eval_s"] > 0 and r["sched_s"] >= 0
    assert "| graphformer |" in out and "1.000x / 1.000x" in out
    assert (tmp_path / "gps_epoch.md").read_text().strip() == out.strip()


@pytest.mark.parametrize("argv,message", [
    (["--models", "graphformer,bogus"], "unknown models ['bogus']"),
    (["--steps", "-1"], "--steps must be >= 0"),
])
def test_gps_epoch_bad_command_lines(load_benchmark, argv, message, capsys):
    epoch = load_benchmark("gps_epoch")
    with pytest.raises(SystemExit):
        epoch.parse_args(argv)
    assert message in capsys.readouterr().err


def test_every_model_trains_on_the_epochs_batches_collated_once(data, monkeypatch):
    s = study.Settings(**SIZES)
    splits = study.load_splits(str(data), s)
    cpu = torch.device("cpu")
    a = study.epoch_batches(splits["train"], s, 0, 1, cpu)
    b = study.epoch_batches(splits["train"], s, 0, 1, cpu)
    smiles = [m for batch in a for m in batch.smiles]
    assert smiles == [m for batch in b for m in batch.smiles]  # the seeded shuffle
    assert sorted(smiles) == sorted(g.smiles for g in splits["train"])
    assert smiles != [m for batch in study.epoch_batches(splits["train"], s, 0, 0, cpu)
                      for m in batch.smiles]
    collated, seen = [], {}
    real_batches, real_step = study.epoch_batches, study.train_step

    def batches(*args):
        collated.append(real_batches(*args))
        return collated[-1]

    def step(model, data, optimizer):  # the batches each model trains on, by model
        seen.setdefault(id(model), []).append(id(data))
        return real_step(model, data, optimizer)
    monkeypatch.setattr(study, "epoch_batches", batches)
    monkeypatch.setattr(study, "train_step", step)
    rows = study.run_seed(splits, s, 0, cpu, ["graphformer", "gpsconv"])
    assert len(collated) == 2  # one collation an epoch, for both models
    expected = [id(b) for epoch in collated for b in epoch]
    assert len(seen) == 2 and all(ids == expected for ids in seen.values())
    for r in rows:
        assert len(r["epoch_cpu_s"]) == 2 and r["collate_cpu_s_per_epoch"] > 0
        assert r["best_epoch"] in (1, 2) and r["test"] == r["test_mae"][r["best_epoch"] - 1]


def test_the_studys_adamw_equals_the_per_tensor_loop(data):
    s = study.Settings(**SIZES)
    batches = study.epoch_batches(study.load_splits(str(data), s)["train"], s, 0, 0,
                                  torch.device("cpu"))
    params = []
    for foreach in (True, False):
        model, opt, _ = study.trainer("graphformer", s, 0, torch.device("cpu"))
        assert opt.defaults["foreach"] is True
        if not foreach:  # at the learning rate the scheduler has set
            opt = torch.optim.AdamW(model.parameters(), lr=opt.param_groups[0]["lr"],
                                    weight_decay=s.weight_decay, foreach=False)
        torch.manual_seed(1)  # the same dropout draws
        for batch in batches:
            study.train_step(model, batch, opt)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(*params)
