"""Where the blocks of a block-wise run are computed: in this process, or on Dask workers.

:class:`InlineExecutor` runs each task when it is submitted (no Dask, no extra process).
:func:`block_executor` gives it for ``workers=0``, else a :class:`DaskExecutor` on a
``dask.distributed`` LocalCluster of ``workers`` processes (one thread each; a worker loads
the model once, through :func:`napari_anystar.model.registry.load_model`'s cache), or on an
existing cluster at a scheduler address (ValueError, one line, if it cannot be reached
within :data:`CONNECT_TIMEOUT_S`). :func:`auto_workers` is the number of local workers when
the user gives none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT_S = 5
#: Tasks kept in flight per Dask worker thread (one computing, one queued).
TASKS_PER_THREAD = 2
#: Arrays larger than this (bytes) are scattered to the workers instead of embedded in tasks.
SCATTER_BYTES = 1 << 20
#: CPU cores per local worker when the number of workers is chosen automatically.
CORES_PER_WORKER = 2


class Executor(Protocol):
    """What the block-wise driver needs: submit, wait for any, cancel."""

    capacity: int  # tasks worth keeping in flight

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def wait(self, futures: Collection[Any]) -> list[Any]: ...

    def cancel(self, futures: Collection[Any]) -> None: ...


class InlineExecutor:
    """Runs each task at once, in this process; its future is already done."""

    capacity = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:
            future.set_exception(err)
        return future

    def wait(self, futures: Collection[Future]) -> list[Future]:
        return list(futures)

    def cancel(self, futures: Collection[Future]) -> None:
        """Nothing is ever in flight."""


class DaskExecutor:
    """Tasks on a ``distributed.Client``'s workers; large arrays are scattered first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        self.capacity = TASKS_PER_THREAD * max(1, threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        args = tuple(self.client.scatter(a, hash=False)
                     if isinstance(a, np.ndarray) and a.nbytes > SCATTER_BYTES else a
                     for a in args)
        return self.client.submit(fn, *args, pure=False)

    def wait(self, futures: Collection[Any]) -> list[Any]:
        from distributed import wait

        with self.client.as_current():
            return list(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def cancel(self, futures: Collection[Any]) -> None:
        if futures:
            self.client.cancel(list(futures))


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A client of the scheduler at ``address``; ValueError (one line) if it is unreachable."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ValueError(f"cannot connect to the Dask scheduler at {address!r} within "
                         f"{timeout:g} s ({reason})") from None


def auto_workers(n_blocks: int) -> int:
    """Local workers for a job of ``n_blocks`` blocks (all its volumes together): one per
    :data:`CORES_PER_WORKER` CPU cores (at least one), or 0 (this process) for one block."""
    return 0 if n_blocks <= 1 else max(1, (os.cpu_count() or 1) // CORES_PER_WORKER)


def local_cluster(workers: int) -> Any:
    """A LocalCluster of ``workers`` processes, one thread each, TensorFlow's threads shared
    out among them."""
    from distributed import LocalCluster

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.ERROR, env=env)


@contextmanager
def block_executor(workers: int = 0, scheduler: str | None = None) -> Iterator[Any]:
    """The executor for ``workers`` local processes (0: this process) or a scheduler address
    (``workers`` is then ignored); Dask clients and clusters are closed on exit."""
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    if scheduler is None and workers == 0:
        yield InlineExecutor()
        return
    cluster = None
    if scheduler is not None:
        client = connect(scheduler)
    else:
        from distributed import Client

        cluster = local_cluster(workers)
        client = Client(cluster, set_as_default=False)
    try:
        yield DaskExecutor(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
