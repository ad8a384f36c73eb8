"""Cells on a Ray cluster (``--executor ray``): each cell one Ray task, a cell that needs another
(a teacher, a pretrained source) a task that takes that one's result as its argument.

Ray does the scheduling the local runner does by hand: a task starts when the CPUs (and GPU) it
declares are free somewhere in the cluster and its arguments (the records of the cells it needs)
exist, so no folder is polled for readiness. What stays lightship's:

- **Where cells write.** A task trains into ``<out>/cells/...`` on whichever machine runs it, so
  the study folder must be the same folder on every machine (a shared filesystem: NFS, a cluster
  volume). Before the first task, any cluster but the command's own local one is asked, one
  tiny task per machine, whether it sees a file just written there and the command's working
  directory (cells run in it); a machine that does not is refused in one line (a folder under
  /tmp, private to each machine, is the usual cause).
- **Resources.** ``jobs`` keeps its meaning, cells per machine: each task asks for the smallest
  machine's CPUs // jobs (its torch threads, as a local worker's share), and one GPU when its
  recipe trains on CUDA (``train.device: cuda``, or ``auto`` on a cluster that has GPUs).
- **Faults.** A worker process that dies mid-cell (killed, out of memory, its machine gone) is
  Ray's to retry, up to :data:`RETRIES` times, on any worker; the retry finds the cell's
  checkpoint and resumes it, bit-identical as the local runner's resume is. A cell that fails
  for its own reasons returns its record (divergence: status ``failed``) or raises; neither is
  retried. Ctrl-C cancels every task (running ones are killed; their checkpoints stay) and the
  command says how to continue.

Ray is imported here only (``pip install 'lightship[ray]'``); nothing else in lightship needs it.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightship.errors import UserError

if TYPE_CHECKING:
    from lightship.studies.runner import Cell

EXECUTORS = ("local", "ray")
RETRIES = 3
"""Re-runs of a cell whose worker process died (Ray's ``max_retries``); its own errors: none."""


def check_executor(executor: str, address: str | None) -> None:
    """Refuse, in one line, an executor that cannot run here (before any folder is written)."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: give one of {', '.join(EXECUTORS)}")
    if executor == "local":
        if address:
            raise UserError("--address names a Ray cluster: add --executor ray")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'lightship[ray]' (on every "
                        "machine of the cluster)") from None


_session: Cluster | None = None


@contextmanager
def connected(executor: str, address: str | None) -> Iterator[Cluster | None]:
    """The Ray connection of one command (None with the local executor): a study's two passes
    (cells, then twins) and a lift's rounds share it instead of starting Ray each time."""
    global _session
    if executor != "ray" or _session is not None:
        yield _session if executor == "ray" else None
        return
    _session = Cluster(address)
    try:
        yield _session
    finally:
        _session.close()
        _session = None


class Cluster:
    """A connection to Ray for one command: a local cluster started here (``address`` None), or
    the cluster at ``address`` (``auto``: the one ``ray start`` began on this machine)."""

    def __init__(self, address: str | None) -> None:
        import logging

        import ray

        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            term = signal.getsignal(signal.SIGTERM)  # ray.init sets its own (sys.exit)
            try:
                ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                msg = _first_line(exc)
                auth = ("; a cluster with token authentication (ray start's default since "
                        "Ray 2.59) also needs RAY_AUTH_MODE=token here"
                        if address and not os.environ.get("RAY_AUTH_MODE") else "")
                raise UserError(f"--address {address}: no Ray cluster there ({msg}); start one "
                                "with `ray start --head` or leave --address out for a local "
                                f"one{auth}") from None
            finally:
                if term is not None:
                    signal.signal(signal.SIGTERM, term)
            self.started_here = True
        self.local = self.started_here and not address  # every worker is on this machine

    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def cpus_per_cell(self, jobs: int) -> int:
        """The smallest machine's CPUs // jobs (at least 1): a local worker's share."""
        cpus = [int(n["Resources"].get("CPU", 0)) for n in self.nodes()]
        cpus = [c for c in cpus if c > 0] or [1]
        return max(1, min(cpus) // jobs)

    def slots(self, jobs: int) -> int:
        """Cells the cluster trains at once (for a lift's time model)."""
        per = self.cpus_per_cell(jobs)
        return max(1, sum(int(n["Resources"].get("CPU", 0)) // per for n in self.nodes()))

    def gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def check_reachable(self, out: Path, cwd: str) -> None:
        """Every machine must see the study folder this one writes (cells write there) and
        this working directory (cells run in it: a recipe's relative paths are read from it).
        Asked of every machine unless the cluster is this command's own, on this machine."""
        if self.local:
            return
        out.mkdir(parents=True, exist_ok=True)
        token = out.resolve() / f".reach-{uuid.uuid4().hex}"
        token.write_text("lightship: is this folder shared?\n")
        try:
            blind = self.blind_nodes(token, cwd, self.nodes())
        finally:
            token.unlink(missing_ok=True)
        if blind:
            raise UserError(unreachable_message(out, cwd, blind))

    def blind_nodes(self, path: Path, cwd: str, nodes: list[dict[str, Any]]) -> list[str]:
        """The addresses of the machines on which ``path`` or the folder ``cwd`` is missing."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self.ray.remote(num_cpus=0)(_sees)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(path), cwd) for n in nodes]
        seen = self.ray.get(refs, timeout=120)
        return [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def _sees(path: str, cwd: str) -> bool:
    return os.path.isdir(cwd) and os.path.exists(path)


def _first_line(exc: BaseException) -> str:
    """A Ray error's first line (its messages run to many), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable_message(out: Path, cwd: str, blind: list[str]) -> str:
    private = any(str(p).startswith(t) for p in (out.resolve(), cwd)
                  for t in ("/tmp/", "/var/tmp/", "/dev/shm/"))
    return (f"{out} (or the working directory {cwd}) is not visible on the Ray machine(s) "
            f"{', '.join(blind)}: cells write into the study folder on whichever machine trains "
            "them, so run from, and give --out on, a filesystem every machine shares"
            + (" (/tmp is private to each machine)" if private else ""))


def resources(device: str, cpus: int, cluster_gpus: float) -> dict[str, float]:
    """What a cell's task declares: ``cpus`` CPUs, and one GPU when it trains on CUDA (its
    recipe says cuda, or auto on a cluster with GPUs; Ray then sets CUDA_VISIBLE_DEVICES)."""
    cuda = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
    return {"num_cpus": cpus, "num_gpus": 1 if cuda else 0}


def _cell_task(spec: dict[str, Any], threads: int, cwd: str,
               *needed: dict[str, Any]) -> dict | None:
    """One cell on a Ray worker, in the command's working directory (a relative --out, data
    path or teacher run resolves as it does for the local runner): None when a cell it needs
    did not finish (the driver writes that record), else the cell's record
    (lightship.studies.cells.run_cell)."""
    if any(rec.get("status") != "finished" for rec in needed):
        return None
    import torch

    os.chdir(cwd)

    from lightship.studies.cells import run_cell

    torch.set_num_threads(threads)  # the CPUs this task declared
    return run_cell(spec)


def run(out: Path, todo: list[Cell], jobs: int, address: str | None, running: list[Cell],
        finish: Callable[[Cell, dict], None], records: dict[str, dict],
        spec: Callable[[Path, Cell], dict[str, Any]],
        blocked: Callable[[Cell, dict[str, dict]], dict[str, Any]]) -> None:
    """Bring the cells ``todo`` to done on Ray (order as given: a needed cell before the cells
    that need it); ``finish`` each record as it arrives."""
    with connected("ray", address) as cluster:
        assert cluster is not None
        _run(cluster, out, todo, jobs, running, finish, records, spec, blocked)


def _run(cluster: Cluster, out: Path, todo: list[Cell], jobs: int, running: list[Cell],
         finish: Callable[[Cell, dict], None], records: dict[str, dict],
         spec: Callable[[Path, Cell], dict[str, Any]],
         blocked: Callable[[Cell, dict[str, dict]], dict[str, Any]]) -> None:
    ray = cluster.ray
    refs: dict[str, Any] = {}
    ok = False
    try:
        cwd = os.getcwd()
        cluster.check_reachable(out, cwd)
        threads = cluster.cpus_per_cell(jobs)
        gpus = cluster.gpus()
        task = ray.remote(_cell_task)
        queue = list(todo)
        cells: dict[Any, Cell] = {}
        while queue:  # submit each cell once the cells it needs are submitted or done
            cell = next((c for c in queue if all(r in refs or r in records for r in c.needs)),
                        None)
            if cell is None:
                raise RuntimeError(f"cells wait on cells that never run: {queue[0].needs}")
            queue.remove(cell)
            args = [refs[r] if r in refs else records[r] for r in cell.needs]
            ref = task.options(**resources(cell.recipe.train.device, threads, gpus),
                               max_retries=RETRIES, retry_exceptions=False,
                               name=f"lightship {cell.rel}").remote(spec(out, cell), threads, cwd,
                                                                    *args)
            refs[cell.rel] = ref
            cells[ref] = cell
            running.append(cell)
        pending = list(cells)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                cell = cells[ref]
                running.remove(cell)
                finish(cell, _result(ray, ref, cell) or blocked(cell, records))
        ok = True
    finally:
        if not ok:  # an error or Ctrl-C: no cell goes on training (checkpoints stay)
            for ref in refs.values():
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # finished already, or the cluster is gone
                    pass


def _result(ray, ref, cell: Cell) -> dict | None:
    from ray.exceptions import (
        NodeDiedError,
        OutOfMemoryError,
        RayError,
        RayTaskError,
        WorkerCrashedError,
    )

    try:
        return ray.get(ref)
    except RayTaskError as exc:  # the cell's own error, raised as the local runner raises it
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except RayError as exc:
        line = _first_line(exc)
        if isinstance(exc, WorkerCrashedError | NodeDiedError | OutOfMemoryError):
            raise UserError(f"{cell.rel}: its Ray worker died {RETRIES + 1} times ({line}); "
                            "the cell keeps its checkpoint: run the same command again to "
                            "resume it") from None
        raise UserError(f"{cell.rel}: Ray could not run it ({line})") from None


def add_executor_args(p) -> None:
    """``--executor`` and ``--address``, the same on ``lightship study`` and ``lightship lift``."""
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="where cells train: "
                   "local (worker processes here, --jobs at a time; default) or ray (each cell "
                   "a Ray task; --jobs cells per machine; pip install 'lightship[ray]')")
    p.add_argument("--address", help="with --executor ray: the Ray cluster (auto: the one "
                   "`ray start` began on this machine; host:6379; ray://host:10001); default: "
                   "a local cluster for this command. --out must be on a filesystem every "
                   "machine shares")
