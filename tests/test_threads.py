"""lightship.train.threads: the thread policy on fake CPUs, quotas and neighbours; the readers
of /proc/stat and cgroup files on fake ones; the user's choice is never overridden."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightship.train import threads
from lightship.train.threads import (
    Sample,
    busy_seconds,
    cgroup_usage,
    choose_threads,
    cpu_quota,
    fit_threads,
    manage_threads,
    others_between,
)


@pytest.mark.parametrize("most, cpus, quota, others, in_quota, want", [
    (2, 2, None, 0.0, 0.0, 2),    # alone: every core (no loss alone)
    (2, 2, None, 0.3, 0.0, 2),    # background noise below half a CPU: still both
    (2, 2, None, 0.7, 0.0, 1),    # one busy neighbour (it gets 2/3 of a core beside 2 threads)
    (2, 2, None, 2.0, 0.0, 1),    # two busy loops: one thread, never none
    (8, 16, None, 0.0, 0.0, 8),   # never more than torch's own count (physical cores)
    (16, 16, None, 3.2, 0.0, 13),
    (8, 16, None, 8.0, 0.0, 8),   # a study worker's share (16 cores / 2 jobs) beside its twin
    (4, 64, 4.0, 30.0, 0.0, 4),   # a container: 4 CPUs of quota on a busy 64-core host
    (4, 64, 4.0, 30.0, 2.6, 1),   # ... whose quota another process of the container uses
    (4, 64, 2.5, 0.0, 0.0, 3),    # a fractional quota, rounded half up like the load
])
def test_threads_are_the_free_cpus_between_one_and_most(most, cpus, quota, others, in_quota,
                                                        want):
    assert choose_threads(most, cpus, quota, others, in_quota) == want


def test_others_are_the_busy_time_minus_our_own():
    a = Sample(wall=10.0, cpus=frozenset({0, 1}), busy=100.0, own=5.0, group=50.0)
    b = Sample(wall=12.0, cpus=frozenset({0, 1}), busy=103.0, own=6.0, group=52.0)
    assert others_between(a, b) == pytest.approx((1.0, 0.5))  # (3 - 1) / 2 s, (2 - 1) / 2 s
    quiet = Sample(wall=12.0, cpus=frozenset({0, 1}), busy=101.0, own=6.5, group=None)
    assert others_between(a, quiet) == (0.0, 0.0)  # never negative; no cgroup: 0


def test_busy_seconds_reads_only_the_cpus_we_may_use():
    hz = os.sysconf("SC_CLK_TCK")
    stat = ("cpu  900 0 90 9000 9 0 0 0 0 0\n"
            "cpu0 100 10 20 5000 40 1 2 3 0 0\n"   # busy: 100+10+20+1+2+3 = 136 ticks
            "cpu1 700 0 60 3000 5 0 0 7 0 0\n"     # busy: 767 ticks
            "intr 1 2 3\n")
    assert busy_seconds({0}, stat) == pytest.approx(136 / hz)
    assert busy_seconds({0, 1}, stat) == pytest.approx((136 + 767) / hz)


def test_cgroup_quota_v2_takes_the_tightest_ancestor(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    job = tmp_path / "user" / "job"
    job.mkdir(parents=True)
    (tmp_path / "user" / "cpu.max").write_text("150000 100000\n")
    (job / "cpu.max").write_text("max 100000\n")
    (tmp_path / "user" / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    quota, folder = cpu_quota(tmp_path, "0::/user/job\n")
    assert (quota, folder) == (1.5, tmp_path / "user")
    assert cgroup_usage(folder) == 2.5
    assert cpu_quota(tmp_path, "0::/elsewhere\n") == (None, None)  # namespace root: no limit


def test_cgroup_quota_v1_and_its_separate_cpuacct(tmp_path: Path):
    cpu = tmp_path / "cpu" / "docker" / "c1"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    acct = tmp_path / "cpuacct" / "docker" / "c1"
    acct.mkdir(parents=True)
    (acct / "cpuacct.usage").write_text("3000000000\n")
    quota, folder = cpu_quota(tmp_path, "4:memory:/docker/c1\n1:cpu:/docker/c1\n")
    assert (quota, folder) == (2.0, cpu)
    assert cgroup_usage(folder) == 3.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cpu_quota(tmp_path, "1:cpu:/docker/c1\n") == (None, None)


@pytest.fixture
def managed(monkeypatch):
    """manage_threads() in this test only; torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    for key in (*threads.USER_ENV, threads.POLICY_ENV):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    threads._managed = None
    torch.set_num_threads(before)


def _feed(monkeypatch, samples):
    """take_sample returns these in turn (two CPUs, no cgroup quota)."""
    it = iter(samples)
    monkeypatch.setattr(threads, "take_sample", lambda group: next(it))
    monkeypatch.setattr(threads, "cpu_quota", lambda: (None, None))


def _s(wall, busy, own):
    return Sample(wall, frozenset({0, 1}), busy, own, None)


def test_a_managed_run_gives_way_to_busy_neighbours_and_takes_the_cores_back(managed):
    torch.set_num_threads(2)  # as torch's own count on a 2-core machine
    _feed(managed, [_s(0.0, 0.0, 0.0),    # manage_threads: the first measurement
                    _s(1.0, 1.0, 1.0),    # epoch 1: only ourselves (imports) → 2
                    _s(3.0, 5.0, 3.0),    # epoch 2: we used 2 s, others 2 s over 2 s → 1
                    _s(3.1, 5.2, 3.1),    # epoch 3 too soon after: keep 1, window grows
                    _s(5.0, 7.0, 4.9),    # over 2 s others used 0.2: both cores again
                    ])
    manage_threads()
    assert [fit_threads() for _ in range(4)] == [2, 1, 1, 2]
    assert torch.get_num_threads() == 2


def test_an_unmanaged_process_and_the_users_choice_are_left_alone(managed):
    torch.set_num_threads(2)
    threads._managed = None
    assert fit_threads() == 2  # a library caller: nothing changes
    managed.setenv("OMP_NUM_THREADS", "3")
    _feed(managed, [])  # no sample is ever taken
    manage_threads()
    assert fit_threads() == 3 and torch.get_num_threads() == 3  # what OMP_NUM_THREADS says
    manage_threads(jobs=2)  # a study worker: the lower of it and cores / jobs, as before
    assert fit_threads() == min(3, max(1, (os.cpu_count() or 1) // 2))


def test_fixed_policy_keeps_the_old_counts(managed):
    torch.set_num_threads(2)
    managed.setenv(threads.POLICY_ENV, "fixed")
    _feed(managed, [])
    manage_threads()
    assert [fit_threads() for _ in range(3)] == [2, 2, 2]  # torch's own count
    manage_threads(jobs=2)
    assert fit_threads() == max(1, (os.cpu_count() or 1) // 2)  # a worker's cores / jobs
