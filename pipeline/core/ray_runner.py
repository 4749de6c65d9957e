"""Ray orchestration: start or join Ray, and map pure per-shard functions over it.

Stage logic never imports Ray: this module is the only place that does. Stages reach it
through their :class:`~siftmix.pipeline.core.stage.StageContext` (``ctx.map``, ``ctx.map_actors``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import RayConfig
from .errors import TaskError

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    "RAY_DEDUP_LOGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _quiet_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def ray_session(cfg: RayConfig, address: str | None = None, log: Callable[[str], None] | None = None):
    """Use the Ray that is already initialised, join a cluster (``address``, config, or
    ``RAY_ADDRESS``), or start a quiet local Ray on this machine."""
    import ray

    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        _quiet_data_context()
        yield
        return
    address = address or cfg.address or os.environ.get("RAY_ADDRESS")
    # Runtime env for workers: quiet too, and able to import this very checkout of siftmix;
    # the storage settings and the non-secret storage environment (credentials never travel:
    # each node takes them from its own environment or instance role).
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=os.environ.get("SIFTMIX_RAY_LOGS") == "1",
                  runtime_env={"env_vars": {**QUIET_ENV, **storage_env()}})
    if address:
        info = ray.init(address=address, **kwargs)
    else:
        # address="local": always a new embedded Ray, even when `ray start` left a cluster on this machine
        info = ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard,
                        object_store_memory=cfg.object_store_memory, **kwargs)
    _quiet_data_context()
    if log:
        where = f"cluster at {address}" if address else "local Ray"
        log(f"ray: {where}, {int(ray.cluster_resources().get('CPU', 0))} CPUs")
        url = getattr(info, "dashboard_url", None)
        if url:
            log(f"ray: dashboard at http://{url}")
    try:
        yield
    finally:
        ray.shutdown()


STORAGE_ENV = ("SIFTMIX_STORAGE", "SIFTMIX_LEASE_S", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_PROFILE")


def storage_env() -> dict[str, str]:
    """The storage settings a worker needs, never a secret (no keys, no tokens)."""
    return {k: os.environ[k] for k in STORAGE_ENV if os.environ.get(k)}


def cluster_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _one_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    msg = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {msg[-1] if msg else ''}"


def _task_error(name: str, task, err: BaseException) -> TaskError:
    """One line for a task that raised (its exception) or whose worker died too often."""
    import ray

    where = f"a {name.strip('_').removesuffix('_task')} task failed{_task_input(task)}"
    if isinstance(err, ray.exceptions.RayTaskError):
        return TaskError(f"{where}: {_one_line(err)}", getattr(err, "cause", None))
    first = (str(err).strip().splitlines() or [""])[0]
    return TaskError(f"{where}: its Ray worker died and the retries are spent (killed, out of memory or "
                     f"crashed; the Ray logs tell which): {type(err).__name__}: {first}", err)


def _task_input(task) -> str:
    """The input a task works on, for error messages: its file or folder, if it names one."""
    if task is None:
        return ""
    get = task.get if isinstance(task, dict) else lambda k: getattr(task, k, None)
    for key in ("path", "file", "dir"):
        if isinstance(get(key), str):
            return f" on {get(key)}"
    return _task_input(get("task"))


def _call(fn: Callable, task: dict, kwargs: dict) -> dict:
    return fn(task, **kwargs)


def map_tasks(fn: Callable[[dict], dict], tasks: list[dict], *, workers: int | None = None,
              num_cpus: float = 1, fn_kwargs: dict | None = None, max_retries: int = 3) -> Iterator[dict]:
    """Run ``fn(task, **fn_kwargs) -> dict`` once per task as Ray tasks, at most ``workers`` at
    a time (default: the cluster's CPUs), yielding the small result dicts as they finish.

    Coarse tasks (one input file or shard each, seconds to minutes) are submitted directly as
    Ray tasks rather than through a Ray Data ``map_batches``: measured here (Ray 2.60, 2 CPUs),
    Ray Data's streaming executor ran the first tasks of such a pipeline one at a time and added
    about a second per dataset, which cost half the throughput of a 2-core ingest. Each task
    writes its own output shard, named from its input, so the result does not depend on the
    order tasks run in. Tasks are retried on worker or node death (``max_retries``)."""
    import ray

    if not tasks:
        return
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9)))
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(_call)
    fn_ref = ray.put(fn)
    kw_ref = ray.put(fn_kwargs or {})
    pending: list = []
    inputs: dict = {}  # ObjectRef -> task, to name the input of a task that fails
    queue = iter(tasks)

    def submit(t: dict) -> None:
        ref = remote.remote(fn_ref, t, kw_ref)
        inputs[ref] = t
        pending.append(ref)

    for t in queue:
        submit(t)
        if len(pending) >= workers:
            break
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for t in queue:
            submit(t)
            break
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayError as err:  # the task raised, or its worker died max_retries + 1 times
            for p in pending:
                ray.cancel(p)
            raise _task_error(getattr(fn, "__name__", "task"), inputs.get(done[0]), err) from None
        inputs.pop(done[0], None)
        yield result


def map_actors(actor_cls: type, ctor_kwargs: dict, tasks: list[dict], *, workers: int | None = None,
               num_cpus: float = 1, num_gpus: float = 0) -> Iterator[dict]:
    """Run ``actor.process(task) -> dict`` over a pool of actors, each constructed once (a model
    loaded once per actor, never per batch or per task), yielding results as they finish.
    Default pool size: what the cluster's CPUs (and GPUs, when asked for) allow. An actor whose
    process dies is restarted once, and its call retried (``max_restarts``, ``max_task_retries``)."""
    import ray

    if not tasks:
        return
    if workers is None:
        res = ray.cluster_resources()
        workers = max(1, int(res.get("CPU", 1) // max(num_cpus, 1e-9)))
        if num_gpus:
            workers = max(1, min(workers, int(res.get("GPU", 0) // num_gpus)))
    workers = min(workers, len(tasks))
    remote_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=1, max_task_retries=2)(actor_cls)
    actors = [remote_cls.remote(**ctor_kwargs) for _ in range(workers)]
    idle, running = list(actors), {}  # running: ObjectRef -> (actor, task)
    queue = iter(tasks)

    def fill() -> None:
        if not idle:
            return
        for t in queue:
            a = idle.pop()
            running[a.process.remote(t)] = (a, t)
            if not idle:
                break

    try:
        fill()
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(done)
            try:
                result = ray.get(done)
            except ray.exceptions.RayError as err:  # process raised, or its actor died for good
                raise _task_error(f"{actor_cls.__name__}.process", task, err) from None
            idle.append(actor)
            fill()
            yield result
    finally:
        for a in actors:
            ray.kill(a)


class Progress:
    """Stage progress: a rich bar on a terminal, plain log lines every few seconds otherwise.

    Counts tasks (files, shards), and where the stage knows them, bytes (rate, ETA) and
    documents (``docs_total``: documents processed / total and documents per second)."""

    def __init__(self, label: str, total: int, total_bytes: int | None = None, unit: str = "files",
                 console=None, enabled: bool = True, docs_total: int | None = None):
        self.label, self.total, self.total_bytes, self.unit = label, total, total_bytes, unit
        self.done, self.bytes, self.docs, self.docs_total = 0, 0, 0, docs_total
        self.t0 = self._last = time.time()
        self.console = console
        self._bar = None
        self.enabled = enabled
        if enabled and console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            cols = [TextColumn(f"{label}"), BarColumn(), TextColumn("{task.fields[counts]}")]
            if total_bytes:
                cols.append(TransferSpeedColumn())
            cols += [TimeElapsedColumn(), TimeRemainingColumn()]
            self._bar = RichProgress(*cols, console=console, transient=False)
            self._task = self._bar.add_task(label, total=total_bytes or docs_total or total, counts=self._counts())
            self._bar.start()

    def _counts(self) -> str:
        out = f"{self.done}/{self.total} {self.unit}"
        if self.docs_total is not None or self.docs:
            el = max(time.time() - self.t0, 1e-9)
            of = f"/{self.docs_total:,}" if self.docs_total is not None else ""
            out += f", {self.docs:,}{of} docs ({self.docs / el:,.0f}/s)"
        return out

    def advance(self, n: int = 1, nbytes: int = 0, docs: int = 0) -> None:
        self.done += n
        self.bytes += nbytes
        self.docs += docs
        if self._bar is not None:
            step = nbytes if self.total_bytes else docs if self.docs_total else n
            self._bar.update(self._task, advance=step, counts=self._counts())
        elif self.enabled and (time.time() - self._last > 5 or self.done == self.total):
            self._last = time.time()
            el = max(time.time() - self.t0, 1e-9)
            rate = f", {self.bytes / el / 1e6:.1f} MB/s" if self.total_bytes else ""
            frac = self.bytes / self.total_bytes if self.total_bytes else (
                self.docs / self.docs_total if self.docs_total else self.done / max(self.total, 1))
            eta = f", ETA {el * (1 - frac) / frac:.0f}s" if 0 < frac < 1 else ""
            msg = f"{self.label}: {self._counts()}{rate}, {el:.0f}s{eta}"
            if self.console is not None:
                self.console.print(msg, highlight=False)
            else:
                print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
