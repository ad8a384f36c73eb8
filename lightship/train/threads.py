"""Intra-op threads that fit the CPUs a training process actually gets.

Why: torch's OpenMP threads spin at every barrier until all of them arrive. When another process
holds one of the cores, the thread that shares it waits for its time slice while the others spin
on theirs, every barrier of every step. Beside other busy processes a 2-thread run on the 2-core
VM fell to 0.04× its quiet speed (``OMP_NUM_THREADS=1`` kept 0.57×, ``OMP_WAIT_POLICY=PASSIVE``
0.34×; issue 24; benchmarks/contention.py measures before and after side by side). torch's own
thread count is the machine's physical cores, blind to the CPUs this process may run on
(affinity) and to a container's CPU quota.

The policy (:func:`choose_threads`): as many threads as there are CPUs that nobody else is
using — of the CPUs in this process's affinity mask and within its cgroup quota — at least one and
at most ``most`` (torch's own count, or cores / J for a study worker of ``--jobs J``). "Nobody
else" is measured, not guessed: the CPU time the process's CPUs spent busy (/proc/stat, steal
included) minus this process's own CPU time, over the last epoch (and the same within the quota's
cgroup). A CPU counts as free when at least half of it is. Using only free CPUs never
oversubscribes, which is what collapses throughput; the price is that two adaptive runs do not
split a machine evenly: the one that started first keeps the cores it had.

:func:`fit_threads` re-checks once per epoch (a few small file reads). It acts only in a process
that asked for it with :func:`manage_threads` — the ``lightship`` command and study workers, as
with :mod:`lightship.train.malloc`; a library caller's threads stay as its user set them. An
explicit ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is never overridden (a study worker takes the
lower of it and cores / J, as before), and ``LIGHTSHIP_THREADS=fixed`` keeps torch's own count
(workers: cores / J), the behaviour before, for side-by-side measurements. Numbers of a run may
differ in the last digits with the thread count: pin ``OMP_NUM_THREADS`` where bit-identical
reruns matter (the test suite does).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

POLICY_ENV = "LIGHTSHIP_THREADS"  # "fixed": torch's own count, never changed; else adaptive
USER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the user's choice, never overridden
MIN_WINDOW_S = 0.25  # shorter windows hold too few clock ticks (10 ms each) to measure load
CGROUP = Path("/sys/fs/cgroup")


def choose_threads(most: int, cpus: int, quota: float | None = None, others: float = 0.0,
                   others_in_quota: float = 0.0) -> int:
    """Threads for the next epoch: the free CPUs, rounded half up, between 1 and ``most``.

    ``cpus``: CPUs in the affinity mask; ``quota``: the cgroup's CPU quota in CPUs (None: none);
    ``others``: CPUs' worth of time other processes used on those CPUs; ``others_in_quota``:
    what others in the quota's cgroup used of it."""
    free = cpus - others
    if quota is not None:
        free = min(free, quota - others_in_quota)
    return max(1, min(most, math.floor(free + 0.5)))


def cpu_quota(root: Path = CGROUP, membership: str | None = None
              ) -> tuple[float | None, Path | None]:
    """The tightest CPU quota (in CPUs) on this process's cgroup or its ancestors, and the cgroup
    folder that holds it (whose usage counts against it); (None, None) when there is none.
    cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``)."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None, None
    best: tuple[float | None, Path | None] = (None, None)
    for line in membership.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            mount = root
        elif "cpu" in controllers.split(","):
            mount = next((root / n for n in (controllers, "cpu,cpuacct", "cpu")
                          if (root / n).is_dir()), None)
            if mount is None:
                continue
        else:
            continue
        folder = mount / path.strip().lstrip("/")
        folder = folder if folder.is_dir() else mount  # a cgroup namespace: we are its root
        while True:
            quota = _quota_of(folder, v2=controllers == "")
            if quota is not None and (best[0] is None or quota < best[0]):
                best = (quota, folder)
            if folder == mount:
                break
            folder = folder.parent
    return best


def _quota_of(folder: Path, v2: bool) -> float | None:
    try:
        if v2:
            limit, _, period = (folder / "cpu.max").read_text().partition(" ")
            return None if limit == "max" else int(limit) / int(period)
        limit = int((folder / "cpu.cfs_quota_us").read_text())
        return None if limit <= 0 else limit / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cgroup_usage(folder: Path) -> float | None:
    """CPU-seconds the cgroup ``folder`` (with its descendants) has used, v2 or v1."""
    try:
        for line in (folder / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    parts = folder.parts  # v1 may mount cpuacct apart from cpu: the same path under it
    twin = Path(*parts[:parts.index("cpu")], "cpuacct", *parts[parts.index("cpu") + 1:]) \
        if "cpu" in parts else folder
    for acct in (folder, twin):
        try:
            return int((acct / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            continue
    return None


def busy_seconds(cpus: set[int], stat: str | None = None) -> float:
    """CPU-seconds the CPUs ``cpus`` spent busy since boot, by every process (/proc/stat: all
    but idle and iowait; steal, another guest's time, counts as busy; guest time is in user)."""
    if stat is None:
        stat = Path("/proc/stat").read_text()
    ticks = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            ticks += sum(v) - v[3] - v[4]
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """Clocks read together: wall time, busy time of our CPUs, our own and the cgroup's time."""

    wall: float
    cpus: frozenset[int]
    busy: float
    own: float
    group: float | None


def take_sample(group: Path | None) -> Sample:
    cpus = frozenset(os.sched_getaffinity(0))
    t = os.times()
    return Sample(time.monotonic(), cpus, busy_seconds(set(cpus)), t.user + t.system,
                  cgroup_usage(group) if group is not None else None)


def others_between(a: Sample, b: Sample) -> tuple[float, float]:
    """CPUs' worth of time other processes used between two samples: on our CPUs, and within
    the quota's cgroup (0 where unknown)."""
    wall, own = b.wall - a.wall, b.own - a.own
    others = max(0.0, (b.busy - a.busy - own) / wall)
    in_quota = 0.0
    if a.group is not None and b.group is not None:
        in_quota = max(0.0, (b.group - a.group - own) / wall)
    return others, in_quota


@dataclass
class _Managed:
    jobs: int
    user: int | None
    fixed: bool
    last: Sample | None = None
    default: int | None = None  # torch's own thread count, read at the first fit


_managed: _Managed | None = None


def manage_threads(jobs: int = 1) -> None:
    """This process trains: let :func:`fit_threads` fit its torch threads to the CPUs it gets
    (``jobs``: how many such processes a study runs at once; each gets cores / jobs at most).
    Imports nothing heavy and starts the first load measurement."""
    global _managed
    user = next((int(os.environ[k]) for k in USER_ENV
                 if os.environ.get(k, "").strip().isdigit() and int(os.environ[k]) > 0), None)
    _managed = _Managed(max(1, jobs), user, os.environ.get(POLICY_ENV, "") == "fixed")
    if user is None and not _managed.fixed:
        try:
            _managed.last = take_sample(cpu_quota()[1])
        except (OSError, ValueError, AttributeError):  # no /proc (not Linux): stay fixed
            _managed.fixed = True


def fit_threads() -> int:
    """Set torch's intra-op threads for the next epoch by the module's policy (a no-op unless
    :func:`manage_threads` was called); return the count in use."""
    import torch

    m = _managed
    if m is None:
        return torch.get_num_threads()
    if m.default is None:
        m.default = torch.get_num_threads()
    n = _next_count(m, torch.get_num_threads())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def _next_count(m: _Managed, current: int) -> int:
    assert m.default is not None
    if m.fixed or m.user is not None:  # the count before this module: torch's, or cores / J
        share = max(1, (os.cpu_count() or 1) // m.jobs)
        if m.jobs == 1:
            return m.user or m.default
        return min(m.user, share) if m.user is not None else share
    quota, group = cpu_quota()
    now = take_sample(group)
    cpus = len(now.cpus)
    limit = cpus if quota is None else min(cpus, max(1, math.floor(quota)))
    most = max(1, min(m.default, limit) // m.jobs)
    last = m.last
    if last is None or last.cpus != now.cpus or (last.group is None) != (now.group is None):
        m.last = now  # nothing comparable to measure over yet
        return min(current, most) if last is not None else most
    if now.wall - last.wall < MIN_WINDOW_S:
        return min(current, most)  # keep the window growing until it can be measured
    m.last = now
    others, in_quota = others_between(last, now)
    return choose_threads(most, cpus, quota, others, in_quota)
