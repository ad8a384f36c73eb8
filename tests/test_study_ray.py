"""`--executor ray`: a study on a local Ray cluster of 2 CPUs ends in the local runner's study.json,
also when a Ray worker is killed mid-cell (Ray re-runs the task, the cell resumes from its
checkpoint) and (slow suite) after a Ctrl-C and a re-run; a cell that needs another waits for it
through Ray; (slow suite) a lift on Ray races cell by cell as the local one; bad executor input
is one line.

The cluster is started once for the module with ``ray start`` (token authentication on, Ray's
default for ``ray start``), as a user's would be; the studies run as the CLI in subprocesses.
Skipped without Ray (``pip install 'lightship[ray]'``; the dev extra installs it).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# `ray start` turns token authentication on; a process that connects reads the mode when Ray is
# first imported, so it is set before. The token: ~/.ray/auth_token where a user made one (Ray
# 2.60's `ray start` does not write one and refuses to start without it), else one for this module,
# in RAY_AUTH_TOKEN, which the cluster and every command below inherit
os.environ.setdefault("RAY_AUTH_MODE", "token")
if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
pytest.importorskip("ray", reason="Ray is not installed: pip install 'lightship[ray]'")

from test_study import DATA, _TeacherStudent  # noqa: E402

from lightship.cli import main  # noqa: E402
from lightship.errors import UserError  # noqa: E402
from lightship.studies import on_ray  # noqa: E402
from lightship.studies.analysis import without_session  # noqa: E402
from lightship.studies.runner import execute, make_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
EPOCHS = "12"  # cells of ~1 s: long enough to kill one mid-way


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", RAY_AUTH_MODE="token",
                RAY_USAGE_STATS_ENABLED="0",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightship", "study", "underfit", "--budget", "quick",
            "--epochs", EPOCHS, "--data", DATA, "--out", str(out), "--jobs", "2",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster of 2 CPUs, as `ray start --head` makes one; its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env()
    start = subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict:
    """The reference: the same study with the local runner, two worker processes."""
    out = tmp_path_factory.mktemp("ray") / "local"
    proc = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "study.json").read_text())


def _ray_workers() -> dict[str, int]:
    """Cell path → pid of the Ray worker process training it (its title: ray::lightship REL)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError):
            continue
        if title.startswith("ray::lightship cells/"):
            found[title.split(" ", 1)[1]] = int(proc.name)
    return found


@pytest.mark.timeout(900)
def test_a_study_on_ray_equals_the_local_runners(cluster, local, tmp_path):
    out = tmp_path / "ray"  # given relative: the cells run in the command's directory
    proc = subprocess.run(_cmd(Path("ray"), "--executor", "ray", "--address", cluster),
                          env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((out / "study.json").read_text())
    assert got["complete"] and got["cells_done"] == 6
    assert got["executor"] == "ray" and got["sessions"][-1]["executor"] == "ray"
    assert without_session(got) == without_session(local)


@pytest.mark.timeout(900)
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds workers in /proc")
@pytest.mark.slow  # end to end, tens of seconds: `pytest -m slow`
def test_a_ray_worker_killed_mid_cell_resumes_it_to_the_same_study(cluster, local, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out, "--executor", "ray", "--address", cluster), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 600
    while victim is None and time.time() < deadline and proc.poll() is None:
        workers = _ray_workers()
        for rel, pid in workers.items():
            if (out / rel / "checkpoints/last.json").exists() and \
                    not (out / rel / "cell.json").exists():
                os.kill(pid, signal.SIGKILL)  # mid-cell: checkpointed, not finished
                victim = out / rel
                break
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=900)
    assert victim is not None, "the study ended before a worker could be killed mid-cell"
    assert proc.returncode == 0, stderr[-2000:]  # Ray re-ran the task; the study went on
    starts = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()
              if '"kind": "start"' in line]
    assert [s["resumed"] for s in starts] == [False, True], "the killed cell did not resume"
    got = json.loads((out / "study.json").read_text())
    assert got["complete"] and without_session(got) == without_session(local)


@pytest.mark.slow  # ~30 s: a cluster of its own, twice
@pytest.mark.timeout(900)
def test_ctrl_c_stops_a_ray_study_and_the_same_command_continues_it(local, tmp_path):
    """A local Ray cluster of this command's own (no --address): Ctrl-C to the terminal's
    process group stops it in one line; no cell trains on; the re-run ends as the local one."""
    out = tmp_path / "stopped"
    cmd = _cmd(out, "--executor", "ray")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("cells/*/*/cell.json")) and \
                any(not (p.parents[1] / "cell.json").exists()
                    for p in out.glob("cells/*/*/checkpoints/last.json")):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "lightship: interrupted; run the same command again to continue the study (finished "
        "cells are kept, the interrupted one resumes)")
    assert "Traceback" not in stderr
    time.sleep(1)
    assert not _ray_workers() and not (out / "study.json").exists()  # no cell trains on
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert without_session(json.loads((out / "study.json").read_text())) == without_session(local)


@pytest.mark.timeout(600)
def test_a_cell_that_needs_another_waits_for_it_on_ray(cluster, tmp_path):
    out = tmp_path / "study"
    plan = make_plan(_TeacherStudent(), "quick", seeds=None, folds=None, data=DATA, out=out,
                     command="toy", arms=["student"])
    order = []
    records = execute(plan, jobs=2, quiet=True, on_record=lambda c, r: order.append(c.rel),
                      executor="ray", address=cluster)
    assert all(r["status"] == "finished" for r in records.values()) and len(order) == 4
    for fold in (0, 1):
        teacher = json.loads((out / f"cells/teacher/s0-f{fold}/cell.json").read_text())
        start = json.loads((out / f"cells/student/s0-f{fold}/metrics.jsonl").read_text()
                           .splitlines()[0])
        assert order.index(f"cells/teacher/s0-f{fold}") < \
            order.index(f"cells/student/s0-f{fold}")
        assert teacher["status"] == "finished" and "teacher" in json.dumps(start)


def test_a_folder_no_worker_sees_is_refused_in_one_line(cluster):
    with on_ray.connected("ray", cluster) as c:
        nodes = c.nodes()
        everyone = [n["NodeManagerAddress"] for n in nodes]
        assert c.blind_nodes(Path("/tmp/lightship-no-such-folder/x"), str(ROOT), nodes) == \
            everyone
        assert c.blind_nodes(ROOT / "pyproject.toml", "/no/such/cwd", nodes) == everyone
        assert c.blind_nodes(ROOT / "pyproject.toml", str(ROOT), nodes) == []
    msg = on_ray.unreachable_message(Path("/tmp/s"), "/home/me", ["10.0.0.7"])
    assert "10.0.0.7" in msg and "/tmp is private to each machine" in msg and "\n" not in msg


def test_a_cell_declares_its_cpus_and_a_gpu_when_it_trains_on_cuda():
    assert on_ray.resources("cpu", 4, 8.0) == {"num_cpus": 4, "num_gpus": 0}
    assert on_ray.resources("cuda", 2, 0.0) == {"num_cpus": 2, "num_gpus": 1}
    assert on_ray.resources("auto", 2, 8.0) == {"num_cpus": 2, "num_gpus": 1}
    assert on_ray.resources("auto", 1, 0.0) == {"num_cpus": 1, "num_gpus": 0}


@pytest.mark.parametrize("argv, needle", [
    (["study", "underfit", "--budget", "quick", "--address", "auto"],
     "--address names a Ray cluster: add --executor ray"),
    (["lift", "--data", "digits", "--model", "resnet8", "--address", "auto"],
     "--address names a Ray cluster: add --executor ray"),
])
def test_bad_executor_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(UserError, match=r"pip install 'lightship\[ray\]'"):
        on_ray.check_executor("ray", None)


@pytest.mark.slow  # ~40 s: two whole lifts
@pytest.mark.timeout(900)
def test_a_lift_on_ray_races_and_chooses_as_the_local_one(cluster, tmp_path):
    from test_lift import ARGS, _choice, _npz

    data = _npz(tmp_path / "d.npz")

    def lift(out: Path, *extra: str) -> dict:
        subprocess.run([sys.executable, "-m", "lightship", "lift", "--data", str(data), *ARGS,
                        "--budget", "20m", "--jobs", "2", "--out", str(out), *extra],
                       cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=900)
        return json.loads((out / "lift.json").read_text())

    here = lift(tmp_path / "local")
    there = lift(tmp_path / "ray", "--executor", "ray", "--address", cluster)
    assert there["sessions"][-1]["executor"] == "ray" and there["sessions"][-1]["slots"] == 2
    assert _choice(there) == _choice(here)

    def numbers(state: dict) -> list[dict]:
        return [{k: v for k, v in c.items() if k != "wall_time_s"} for c in state["validation"]]

    assert numbers(there) == numbers(here)  # cell by cell, bit for bit
    assert there["final"]["final/light"]["test_top1"] == here["final"]["final/light"]["test_top1"]


class _Diverges(_TeacherStudent):
    """The toy teacher/student study whose teacher diverges (LR 1e12: NaN in the first steps)."""

    name = "toy-diverges"

    def arms(self, budget):
        student, teacher = super().arms(budget)
        teacher.overrides["optim.lr"] = 1e12
        return [student, teacher]


@pytest.mark.timeout(600)
def test_a_cell_that_diverges_on_ray_is_reported_once_and_blocks_its_students(cluster, tmp_path):
    out = tmp_path / "study"
    plan = make_plan(_Diverges(), "quick", seeds=None, folds=None, data=DATA, out=out,
                     command="toy", arms=["student"])
    records = execute(plan, jobs=2, quiet=True, executor="ray", address=cluster)
    for fold in (0, 1):
        teacher = records[f"cells/teacher/s0-f{fold}"]
        assert teacher["status"] == "failed" and "loss became nan" in teacher["error"]
        starts = (out / f"cells/teacher/s0-f{fold}/metrics.jsonl").read_text() \
            .count('"kind": "start"')
        assert starts == 1  # its own failure: not retried
        student = records[f"cells/student/s0-f{fold}"]
        assert student["status"] == "failed" and "which it needs, failed" in student["error"]
        assert not (out / f"cells/student/s0-f{fold}").exists()  # never started
