"""Kill harness: SIGKILL `lightship train` at seeded random moments (mid-checkpoint-write
included), continue it with --resume until it finishes, and check the final weights are
bit-identical to an uninterrupted run and metrics.jsonl holds every step exactly once.

Kill moments are events seen from outside, so they do not depend on the machine's speed: the
k-th temporary file of an atomic write appearing (the write is in progress: killed mid-write),
or the k-th growth of metrics.jsonl followed by a random delay (killed mid-epoch or mid-eval).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

EPOCHS = 4  # the default run; the 10-kill run trains longer, so ten kills fit before the end
SLOW_EPOCHS = 12
STEPS_PER_EPOCH = 64 // 16


def _recipe(epochs: int) -> list[str]:
    return ["--recipe", "tricks", "--set", "data.name=synthetic:n=64,classes=3,size=8,channels=1",
            "--set", "model.name=cnn4", "--set", f"train.epochs={epochs}",
            "--set", "train.batch_size=16", "--set", "schedule.warmup_epochs=1",
            "--set", "augment.mix_off_epochs=1", "--set", "train.ema=0.9",
            "--set", "train.checkpoint_every=1"]


TIMEOUT = 120  # seconds for one process; a tiny run takes a few


# Loaded into each training process (sitecustomize): it widens the windows of atomic writes,
# so the poller sees a temporary file before its rename even for a 50-byte last.json. It only
# delays fsync and rename of ``.tmp-`` files; what is written, and in what order, is unchanged.
_WIDEN = """
import os, time

_fsync, _replace = os.fsync, os.replace


def _is_tmp_fd(fd):
    try:
        return ".tmp-" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


def fsync(fd):
    if _is_tmp_fd(fd):
        time.sleep(0.01)  # data written, not yet on disk
    return _fsync(fd)


def replace(src, dst, *args, **kwargs):
    if ".tmp-" in os.fspath(src):
        time.sleep(0.01)  # on disk, not yet renamed over the target
    return _replace(src, dst, *args, **kwargs)


os.fsync, os.replace = fsync, replace
"""
_HOOK_DIR = Path(tempfile.mkdtemp(prefix="lightship-kill-hook-"))
(_HOOK_DIR / "sitecustomize.py").write_text(_WIDEN)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([str(_HOOK_DIR), root, env.get("PYTHONPATH", "")])
    return env


def _train_cmd(out: Path, name: str, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightship", "train", *_recipe(epochs), "--out", str(out),
            "--name", name, "--no-progress", *extra]


def _resume_cmd(run: Path) -> list[str]:
    return [sys.executable, "-m", "lightship", "train", "--resume", str(run), "--no-progress"]


def _temps(run: Path) -> set[str]:
    names: set[str] = set()
    for folder in (run, run / "checkpoints"):
        try:
            names.update(n for n in os.listdir(folder) if ".tmp-" in n)
        except OSError:
            pass
    return names


@dataclass
class Kill:
    how: str  # the planned event
    landed: bool = False
    at: str = ""  # what was being written when the kill landed (temp files present)


@dataclass
class Story:
    kills: list[Kill] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def landed(self) -> int:
        return sum(k.landed for k in self.kills)


Plan = tuple[str, "str | int", float]  # ("write", temp-file prefix, 0) or ("lines", n, delay)
def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _run_and_kill(cmd: list[str], run: Path, plan: Plan | None
                  ) -> tuple[int, str, Kill | None]:
    """Run ``cmd``; with a plan, SIGKILL it at the planned event. Returns (rc, stderr, kill).

    ``("write", prefix, 0)``: the moment a temporary file named ``prefix...`` appears (the
    atomic write is in progress). ``("lines", n, delay)``: ``delay`` seconds after
    metrics.jsonl reaches ``n`` lines (mid-epoch, mid-evaluation or mid-checkpoint).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    kill = None
    if plan is not None:
        event, arg, delay = plan
        kill = Kill(how=f"{event} {arg}" + (f" +{delay:.3f}s" if delay else ""))
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if event == "write":
                hit = any(n.startswith(str(arg)) for n in _temps(run))
            else:
                hit = _lines(run / "metrics.jsonl") >= int(arg)
            if hit:
                if delay:
                    time.sleep(delay)
                mine = sorted(n for n in _temps(run) if n.endswith(f"-{proc.pid}"))
                proc.send_signal(signal.SIGKILL)
                kill.at = ",".join(mine) or "no write in progress"
                break
            time.sleep(0.0005)
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{cmd} hung") from None
    if kill is not None:
        kill.landed = proc.returncode == -signal.SIGKILL
    return proc.returncode, err, kill


def _done_epochs(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoints" / "last.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _plan(rng: random.Random, run: Path, fresh: bool, kills_left: int, total: int) -> Plan:
    """A random moment of the next process, chosen among events it will produce, so the kill
    lands. Unless it is the last kill, it falls in the next ``1/kills_left`` of the remaining
    epochs (never in the final one), so the kills spread over the run and none finishes it."""
    done = 0 if fresh else _done_epochs(run)
    epochs = list(range(done + 1, total + 1))
    early = kills_left > 1 and len(epochs) >= 2
    if early:
        epochs = epochs[:max(1, min(len(epochs) - 1, len(epochs) // kills_left))]
    if rng.random() < 0.5 or not epochs:  # in the middle of an atomic write
        writes = [f".step-{STEPS_PER_EPOCH * e:08d}.{kind}.tmp" for e in epochs
                  for kind in ("safetensors", "ema.safetensors", "state.pt")]
        if epochs:
            writes.append(".last.json.tmp")  # the next checkpoint's commit
        if fresh:
            writes.append(".recipe.yaml.tmp")
        if not early:
            writes += [".weights.safetensors.tmp", ".summary.json.tmp"]
        return "write", rng.choice(writes), 0.0
    # metrics.jsonl: a start record, then per epoch its steps (one write) and its evaluation.
    lines = 0 if fresh else _lines(run / "metrics.jsonl")
    per_epoch = STEPS_PER_EPOCH + 1
    return "lines", lines + 1 + rng.randrange(len(epochs) * per_epoch), rng.uniform(0.0, 0.2)


def _finished(run: Path) -> bool:
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "finished" and (run / "weights.safetensors").exists()


def train_with_kills(out: Path, kills: int | list[Plan], seed: int = 0, epochs: int = EPOCHS
                     ) -> tuple[Path, Story]:
    """Train the recipe into ``out/k``, SIGKILLed ``kills`` times (seeded random moments, or the
    given plans), continued with --resume (or the restart the error names) until it finishes."""
    rng = random.Random(seed)
    plans = list(kills) if isinstance(kills, list) else None
    n_kills = len(plans) if plans is not None else int(kills)
    run = out / "k"
    story = Story()
    cmd = _train_cmd(out, "k", epochs)
    for _ in range(n_kills + 20):  # every kill may waste a start; more means a stuck run
        plan = None
        if len(story.kills) < n_kills:
            plan = (plans[len(story.kills)] if plans is not None
                    else _plan(rng, run, fresh="--resume" not in cmd,
                               kills_left=n_kills - len(story.kills), total=epochs))
        story.commands.append("resume" if "--resume" in cmd else " ".join(cmd[-2:]))
        rc, err, kill = _run_and_kill(cmd, run, plan)
        if kill is not None and (kill.landed or rc == 0):  # else: a refused resume, retried
            story.kills.append(kill)
        if rc == 0:
            return run, story
        if kill is not None and kill.landed:
            cmd = _resume_cmd(run)
            continue
        # A resume that cannot continue must say why in one line, and name the way out.
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, f"rc={rc}: {err[-2000:]}\n{story}"
        if "nothing to resume" in lines[0] and _finished(run):
            return run, story  # the kill landed after the summary, while the process exited
        if "no such run folder" in lines[0]:
            cmd = _train_cmd(out, "k", epochs)  # killed before the run folder was made
        elif "--overwrite" in lines[0]:
            cmd = _train_cmd(out, "k", epochs, "--overwrite")  # killed before the first checkpoint
        else:
            raise AssertionError(f"resume is stuck: {lines[0]}\n{story}")
    raise AssertionError(f"the run never finished: {story}")


_REFERENCES: dict[int, Path] = {}


def _reference(tmp_path_factory, epochs: int) -> Path:
    """The uninterrupted run of the same recipe, made the same way (once per session)."""
    if epochs not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"reference{epochs}")
        proc = subprocess.run(_train_cmd(out, "k", epochs), capture_output=True, text=True,
                              env=_env(), timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        _REFERENCES[epochs] = out / "k"
    return _REFERENCES[epochs]


@pytest.fixture
def reference(tmp_path_factory) -> Path:
    return _reference(tmp_path_factory, EPOCHS)


def _steps(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        out.append(json.loads(line))  # every line whole: no torn record survives a resume
    return out


def check_same_as_reference(run: Path, reference: Path, epochs: int = EPOCHS) -> None:
    wa = load_file(str(reference / "weights.safetensors"))
    wb = load_file(str(run / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"not bit-identical: {different}"
    steps = [r for r in _steps(run) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)), "duplicated/lost steps"
    ref_steps = [r for r in _steps(reference) if r["kind"] == "step"]
    assert [r["loss"] for r in steps] == [r["loss"] for r in ref_steps]
    evals = [r["epoch"] for r in _steps(run) if r["kind"] == "eval"]
    assert evals == list(range(1, epochs + 1)), "duplicated/lost evaluations"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == len(steps)
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"left behind: {leftovers}"
    if (run / ".lock").exists():  # only a killed process's stale lock (taken over by the next)
        pid = int((run / ".lock").read_text() or 0)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_killed_twice_resumes_to_identical_weights(tmp_path, reference):
    run, story = train_with_kills(tmp_path, kills=2, seed=0)
    print(f"\nkills landed {story.landed}/{len(story.kills)}: {story}")
    assert story.landed == 2, story
    check_same_as_reference(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize("write", [
    ".recipe.yaml.tmp",  # the new folder holds only the lock: restart with --overwrite
    ".step-00000004.state.pt.tmp",  # the first checkpoint, half written: restart
    ".last.json.tmp",  # the first checkpoint's commit: resume from nothing or from it
    ".step-00000012.safetensors.tmp",  # a later checkpoint, half written: the one before counts
    ".weights.safetensors.tmp",  # final weights half written: resume writes them
    ".summary.json.tmp",  # all but the summary written: resume finishes it
])
def test_killed_mid_write_resumes_to_identical_weights(tmp_path, reference, write):
    run, story = train_with_kills(tmp_path, [("write", write, 0.0)])
    assert story.kills[0].landed, story
    check_same_as_reference(run, reference)


@pytest.mark.slow
def test_killed_ten_times_resumes_to_identical_weights(tmp_path, tmp_path_factory):
    reference = _reference(tmp_path_factory, SLOW_EPOCHS)
    run, story = train_with_kills(tmp_path, kills=10, seed=1, epochs=SLOW_EPOCHS)
    print(f"\nkills landed {story.landed}/{len(story.kills)}: "
          + "; ".join(f"{k.how} ({k.at if k.landed else 'missed: ended first'})"
                      for k in story.kills)
          + f"\ncommands: {story.commands}")
    assert story.landed >= 8, story
    check_same_as_reference(run, reference, SLOW_EPOCHS)
