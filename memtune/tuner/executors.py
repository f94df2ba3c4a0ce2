"""Where evaluations run: in this process, in local worker processes, or on a Dask cluster.

An executor takes :class:`~memtune.tuner.evaluate.EvalTask` s (``submit``) and hands out their
results as they complete (``next_result``; each carries its task's ``index``). The loop keeps the
next batch queued behind the current one, so the workers never wait for the optimizer; it journals
each result at once and tells the optimizer in ask order, so results do not depend on which
executor or how many workers ran them.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from memtune.errors import PluginError, UserError
from memtune.tuner.evaluate import EvalTask, run_task


def run_task_safe(task: EvalTask) -> dict[str, Any]:
    """:func:`run_task`, with user and plugin errors returned as data (they do not all pickle)."""
    try:
        return run_task(task)
    except UserError as exc:
        return {"index": task.index, "error": "user", "message": str(exc)}
    except PluginError as exc:
        return {"index": task.index, "error": "plugin", "plugin": exc.plugin, "hook": exc.hook,
                "message": f"{type(exc.cause).__name__}: {exc.cause}"}


def _raise_if_error(result: dict[str, Any]) -> dict[str, Any]:
    kind = result.get("error")
    if kind == "user":
        raise UserError(result["message"])
    if kind == "plugin":
        raise PluginError(result["plugin"], result["hook"], RuntimeError(result["message"]))
    return result


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker once its parent is gone (a SIGKILLed tuner would
    otherwise leave its pool behind: every worker holds the task queue's write end, so none of
    them ever sees end-of-file)."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="memtune-parent-watch", daemon=True).start()


class Executor:
    """Runs tasks; ``workers`` is how many at once (for the progress ETA and the report).

    This base class runs each task in this process when its result is asked for, in submission
    order."""

    name = "serial"
    workers = 1

    def __init__(self) -> None:
        self._queue: deque[EvalTask] = deque()

    def submit(self, task: EvalTask) -> None:
        """Queue ``task``; its result comes out of :meth:`next_result`."""
        self._queue.append(task)

    def pending(self) -> int:
        """Submitted tasks whose result has not been handed out yet."""
        return len(self._queue)

    def next_result(self) -> dict[str, Any]:
        """The result of a submitted task, waiting until one completes (any of them)."""
        return _raise_if_error(run_task_safe(self._queue.popleft()))

    def run(self, tasks: Sequence[EvalTask]) -> Iterator[dict[str, Any]]:
        """Submit ``tasks`` and yield each result as it completes (nothing else may be pending)."""
        if self.pending():
            raise RuntimeError("run() while other tasks are pending")
        for task in tasks:
            self.submit(task)
        for _ in range(len(tasks)):
            yield self.next_result()

    def close(self) -> None:
        """Release workers or the cluster connection."""

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Everything in this process, one task after the other."""


class LocalExecutor(Executor):
    """A pool of local worker processes (``spawn`` or ``forkserver``: no state forked from the
    parent, so a worker computes exactly what this process would)."""

    name = "local"

    def __init__(self, workers: int, context: str = "spawn") -> None:
        from concurrent.futures import ProcessPoolExecutor

        if workers < 1:
            raise UserError("must be at least 1", field="--workers")
        if context not in ("spawn", "forkserver"):
            raise ValueError(f"context must be spawn or forkserver, got {context!r}")
        super().__init__()
        self.workers = workers
        self.context = context
        self._futures: set[Any] = set()
        self._done: deque[Any] = deque()
        import os

        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(context),
                                        initializer=_exit_with_parent, initargs=(os.getpid(),))

    def submit(self, task: EvalTask) -> None:
        self._futures.add(self.pool.submit(run_task_safe, task))

    def pending(self) -> int:
        return len(self._futures) + len(self._done)

    def next_result(self) -> dict[str, Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self._done:
            done, self._futures = wait(self._futures, return_when=FIRST_COMPLETED)
            self._done.extend(sorted(done, key=lambda f: str(f.result().get("index"))))
        return _raise_if_error(self._done.popleft().result())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "context": self.context}


class DaskExecutor(Executor):
    """Tasks on an existing Dask cluster, given its scheduler address (``tcp://host:8786``) or a
    ``distributed.Client``. The workers need memtune (and any ``-p`` plugin modules) installed."""

    name = "dask"

    def __init__(self, address: Any, timeout: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise UserError("Dask is not installed (pip install 'memtune[dask]')",
                            field="--dask-scheduler") from None
        super().__init__()
        self.address = address
        self._futures: list[Any] = []
        self._completed: Any = None
        if isinstance(address, Client):
            self.client, self._own = address, False
        else:
            _check_reachable(address, timeout)
            try:
                self.client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"cannot reach the Dask scheduler at {address!r}: {exc}",
                                field="--dask-scheduler") from None
            self._own = True
        info = self.client.scheduler_info()
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def submit(self, task: EvalTask) -> None:
        from distributed import as_completed

        fut = self.client.submit(run_task_safe, task, pure=False)
        self._futures.append(fut)
        if self._completed is None:
            self._completed = as_completed([fut], loop=self.client.loop)
        else:
            self._completed.add(fut)

    def pending(self) -> int:
        return len(self._futures)

    def next_result(self) -> dict[str, Any]:
        fut = next(self._completed)
        self._futures.remove(fut)
        return _raise_if_error(fut.result())

    def close(self) -> None:
        for fut in self._futures:
            fut.cancel()
        self._futures.clear()
        if self._own:
            self.client.close()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers,
                "scheduler": str(self.client.scheduler.address)}


def _check_reachable(address: str, timeout: float) -> None:
    """UserError unless ``address`` is a scheduler address whose host and port accept a TCP
    connection: a Client that fails to connect prints a traceback from its finaliser."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(str(address))
        if scheme not in ("tcp", "tls"):
            return  # inproc:// (an in-process cluster) and the like
        host, port = parse_host_port(location)
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"cannot reach the Dask scheduler at {address!r}: {exc}", field="--dask-scheduler"
        ) from None


def make_executor(workers: int | None = None, dask_scheduler: Any = None, context: str = "spawn") -> Executor:
    """The executor the CLI flags ask for: Dask if a scheduler is given, else ``workers`` local
    processes (1: in this process)."""
    if dask_scheduler:
        return DaskExecutor(dask_scheduler)
    if workers is None or workers <= 1:
        if workers is not None and workers < 1:
            raise UserError("must be at least 1", field="--workers")
        return SerialExecutor()
    return LocalExecutor(workers, context)
