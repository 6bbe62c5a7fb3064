"""The sweep's executor, Ray: a local instance on loopback, rows and progress through Ray, a
crashed or killed cell named while the others finish, resume, nothing left behind when the
sweep's parent is killed, a cluster joined by its address, and clear errors for bad input.

Every Ray process these tests start listens and connects on 127.0.0.1 only."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from graphformer.studies import executor as ex
from graphformer.studies.executor import (ExecutorError, RayConfig, RayExecutor,
                                          RayNotInstalled, run_cells)

pytestmark = pytest.mark.usefixtures("ray_local")

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--tasks", "tree", "--models", "gcn,gin", "--depths", "2", "--max-steps", "8",
        "--device", "cpu", "--no-plots"]


@pytest.fixture
def cli(load_benchmark):
    return load_benchmark("oversquash")


def rows_of(out):
    rows = json.loads((out / "results.json").read_text())["rows"]
    for row in rows.values():
        for key in ("seconds", "cpu_seconds", "ran_on"):  # time and place may differ
            row.pop(key, None)
    return rows


def test_the_local_instance_is_on_loopback(ray_local):
    nodes = ray_local.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert ray_local.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


def test_rows_progress_failures_and_more_cells_through_ray():
    # one cell raises, one kills its own worker (kill -9), the rest finish; a finished
    # cell queues one more (as the controls hook does); progress and starts reach here
    def work(payload, progress):
        import os as os_
        import signal as signal_
        progress(0.5)
        if payload == 2:
            raise ValueError("cell two is broken")
        if payload == 3:
            os_.kill(os_.getpid(), signal_.SIGKILL)
        return {"value": payload, "threads": torch.get_num_threads()}

    for workers in (1, 2):
        done, started, shares = {}, [], {}

        def finished(key, row):
            done[key] = row
            return [("e", 5)] if key == "a" else []

        failures = run_cells([("a", 1), ("b", 2), ("c", 3), ("d", 4)], work, workers=workers,
                             on_done=finished, on_start=started.append,
                             on_progress=lambda key, share: shares.update({key: share}))
        assert sorted(done) == ["a", "d", "e"]
        assert done["a"]["value"] == 1 and done["a"]["threads"] == 1  # one torch thread
        where = done["a"]["ran_on"]
        assert where["executor"] == "ray" and where["node"] == "127.0.0.1"
        assert where["ray"] == ex.import_ray().__version__ and where["resources"]["CPU"] == 2
        assert where["cluster"].startswith("127.0.0.1:") and where["address"] == "local"
        assert sorted(started) == ["a", "b", "c", "d", "e"]
        assert shares == {k: 0.5 for k in "abcde"}
        reasons = {f.key: f.reason for f in failures}
        assert sorted(reasons) == ["b", "c"]
        assert "ValueError: cell two is broken" in reasons["b"]
        assert "died" in reasons["c"] and "WorkerCrashedError" in reasons["c"]


def test_a_killed_cell_is_named_the_others_finish_and_a_rerun_completes_it(
        cli, tmp_path, capsys, monkeypatch):
    import graphformer.studies.oversquash as study
    run_cell = study.run_cell

    def crash_gin(cell, *args, **kwargs):  # pickled by value: the workers see this one
        import os as os_
        import signal as signal_
        if cell.model == "gin":
            os_.kill(os_.getpid(), signal_.SIGKILL)  # kill -9 of the cell's worker
        return run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(study, "run_cell", crash_gin)
    out = tmp_path / "crash"
    with pytest.raises(SystemExit) as e:
        cli.main(ARGS + ["--workers", "2", "--no-controls", "--out", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed: tree/gin/2/plain/0" in err and "kill -9" in err
    kept = rows_of(out)
    assert set(kept) == {"tree/gcn/2/plain/0"}

    monkeypatch.setattr(study, "run_cell", run_cell)
    cli.main(ARGS + ["--workers", "2", "--no-controls", "--out", str(out)])
    assert "resuming: 1 of 2 runs" in capsys.readouterr().out
    done = rows_of(out)
    assert set(done) == {"tree/gcn/2/plain/0", "tree/gin/2/plain/0"}
    assert done["tree/gcn/2/plain/0"] == kept["tree/gcn/2/plain/0"]  # not retrained
    saved = json.loads((out / "results.json").read_text())["rows"]
    assert saved["tree/gin/2/plain/0"]["ran_on"]["executor"] == "ray"


def test_bad_input_gets_clear_messages(cli, tmp_path, capsys, monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--gpus-per-run 0.5 asks for a share of a GPU "
                                             "per run, but CUDA is not available"):
            RayConfig(gpus_per_run=0.5).validate()
        with pytest.raises(SystemExit) as e:
            cli.main(ARGS + ["--gpus-per-run", "0.25", "--out", str(tmp_path / "x")])
        assert e.value.code == 2
        assert "CUDA is not available on this machine" in capsys.readouterr().err
    for bad, message in ((dict(gpus_per_run=0), "must be a positive number"),
                         (dict(gpus_per_run=1.5), "above 1 must be a whole number"),
                         (dict(num_cpus=float("nan")), "num_cpus"),
                         (dict(address=" "), "--ray-address must be"),
                         (dict(max_retries=-1), "max_retries"),
                         (dict(connect_timeout=0), "connect_timeout")):
        with pytest.raises(ValueError, match=message):
            RayConfig(**bad).validate()
    with pytest.raises(TypeError, match="workers must be a positive int"):
        RayExecutor(workers=1.5)

    # a cluster that does not answer: named, after a bounded wait (port 1 is closed)
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=r"--ray-address 127.0.0.1:1: no Ray cluster "
                                            r"answers there after 1 s"):
        RayExecutor(RayConfig(address="127.0.0.1:1", connect_timeout=1.0))._connect_new(
            ex.import_ray(local=False))
    assert time.monotonic() - start < 10
    with pytest.raises(ExecutorError, match="neither 'auto' nor host:port"):
        ex._probe("nowhere", 1.0)

    # Ray missing: the message names the extra that brings it
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayNotInstalled, match=r"pip install 'graphformer\[study\]'"):
        ex.import_ray()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with(token: str):
    r"""``pid command`` of the live processes whose environment carries ``token`` (a
    test's processes and every process they started, Ray's included, inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if token.encode() in (entry / "environ").read_bytes():
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies hold nothing
                        command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                        found.append(f"{entry.name} {command.decode(errors='replace')[:80]}")
            except OSError:
                pass
    return found


def _gone(token: str, timeout: float = 90) -> list:
    r"""What is still running with ``token`` after up to ``timeout`` seconds (Ray's
    processes noticed their driver's end within 5 s on a quiet machine, and took over
    30 s once on this 2-core one under load)."""
    deadline = time.monotonic() + timeout
    while (left := _processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _env(token: str, **extra) -> dict:
    return dict(os.environ, GRAPHFORMER_TEST_TOKEN=token, PYTHONUNBUFFERED="1",
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", **extra)


CLI = [sys.executable, str(ROOT / "benchmarks" / "oversquash.py")]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc")
def test_kill_9_of_the_parent_leaves_nothing_behind_and_a_rerun_completes(cli, tmp_path,
                                                                          capsys):
    token = f"kill-parent-{secrets.token_hex(8)}"
    out = tmp_path / "killed"
    args = ARGS + ["--seeds", "0,1,2", "--no-controls", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(CLI + args, env=_env(token), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "results.json").exists():  # the first row: cells are running
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert len(_processes_with(token)) > 3  # the driver, Ray's daemons, its workers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _gone(token) == []  # the local Ray instance died with its driver
    kept = rows_of(out)
    assert 1 <= len(kept) < 6
    cli.main(args)  # the same command again finishes what is missing
    assert f"resuming: {len(kept)} of 6 runs" in capsys.readouterr().out
    assert len(rows_of(out)) == 6


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc")
def test_a_cluster_joined_by_its_address_runs_the_sweep_and_is_named(tmp_path):
    # a head on loopback (Ray's single-machine mode), with its own token, stopped by its
    # process id; the tiny sweep runs there and every row names that cluster
    token = f"head-{secrets.token_hex(8)}"
    port = _free_port()
    env = _env(token, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    temp = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray's socket paths are bounded
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", temp], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = tmp_path / "cluster"
        run = subprocess.run(CLI + ARGS + ["--no-controls", "--ray-address", f"127.0.0.1:{port}",
                                           "--out", str(out)], env=env, capture_output=True,
                             text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert set(rows) == {"tree/gcn/2/plain/0", "tree/gin/2/plain/0"}
        for row in rows.values():
            where = row["ran_on"]
            assert where["cluster"] == where["address"] == f"127.0.0.1:{port}"
            assert where["node"] == "127.0.0.1" and where["resources"] == {"CPU": 2.0}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
    assert _gone(token) == []
    shutil.rmtree(temp, ignore_errors=True)



def _most_at_once(rows):
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_no_more_cells_at_once_than_the_cluster_holds():
    # the session's local instance has 2 CPUs. A cell blocked in a Ray call (as in its
    # progress messages) hands its CPU back, and Ray then starts a cell more (measured:
    # 3 at once without the cap, after a few seconds); 4 workers asked, 2 run
    def interval(payload, progress):  # defined here: pickled by value to the workers
        import time as time_

        import ray as ray_
        start = time_.time()
        progress(0.5)
        ray_.get(ray_.remote(num_cpus=0)(lambda s: time_.sleep(s)).remote(5.0))
        return {"start": start, "end": time_.time()}

    rows = {}
    executor = RayExecutor(RayConfig(num_cpus=1.0), workers=4)
    failures = executor.run_cells([(str(i), i) for i in range(3)], interval,
                                  on_done=lambda key, row: rows.update({key: row}) or ())
    assert failures == [] and sorted(rows) == ["0", "1", "2"]
    assert executor.capacity == 2
    assert _most_at_once(list(rows.values())) == 2
    # cells of 2 CPUs: one at a time on 2 CPUs
    wide = RayExecutor(RayConfig(num_cpus=2.0), workers=4)
    wide.connect()
    assert wide.capacity == 1


def test_cells_queued_by_a_finished_cell_start_next():
    # a control goes to the head of the queue: started last, a dear one would run alone
    started = []
    run_cells([("a", 1), ("b", 2), ("c", 3)], lambda payload, progress: {"v": payload},
              workers=1, on_start=started.append,
              on_done=lambda key, row: [("control", 4)] if key == "a" else [])
    assert started == ["a", "control", "b", "c"]
