"""A retrieval index that lives in a child process: ``IndexProcess(opener)``.

The HTTP service opens every version's index this way. Loading a ScaNN searcher holds Python's
GIL for its whole duration (docs/serving.md has the figures), which would freeze the service's event
loop and every request in flight; loaded in a child process it freezes nothing, while the parent
waits on a pipe. Searches then cross the pipe: one round trip per micro-batch, the queries and
the results pickled (a few kilobytes). The child ends when the ``IndexProcess`` is collected (the
version it served was replaced and its last lookup finished), when ``close()`` is called, or with
the parent.
"""

from __future__ import annotations

import functools
import os
import pickle
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from tfcroloss.pipelines.retrieval import RetrievalIndex, load_index


class IndexProcessError(RuntimeError):
    """The index process died or could not answer."""


class IndexProcess(RetrievalIndex):
    """The index ``opener()`` returns, opened and searched in a child process.

    ``opener`` must be picklable (a module-level function, or a ``functools.partial`` of one);
    an error it raises is raised here, with its own type. Searching is serialised (one request
    in flight), which is how the service's micro-batcher calls it.
    """

    kind = "process"

    def __init__(self, opener: Callable[[], RetrievalIndex], *, start_timeout: float = 600.0):
        # A fresh interpreter (not multiprocessing's fork, unsafe beside TensorFlow's threads, nor
        # its spawn, which re-imports the caller's main script) that talks over a socket pair.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self._process, self._connection)
        self._connection.send(opener)
        facts = self._answer(start_timeout)
        super().__init__(np.empty(0, np.int64), facts["dim"])
        self._num_items, self._is_exact, self.served_kind = facts["num_items"], facts["is_exact"], facts["kind"]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> IndexProcess:
        """Any index written by ``RetrievalIndex.save``, loaded in a child process."""
        return cls(functools.partial(load_index, os.fspath(directory)))

    @property
    def is_exact(self) -> bool:
        return self._is_exact

    @property
    def num_items(self) -> int:
        return self._num_items

    @property
    def ids(self) -> np.ndarray:
        return self._call("ids")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._call("search", self._check_queries(queries, k), k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._call("_search", queries, k)

    def save(self, directory: str | os.PathLike) -> None:
        self._call("save", os.fspath(directory))

    def close(self) -> None:
        """Ends the child process and waits for it (searching afterwards raises
        ``IndexProcessError``)."""
        self._finalizer()
        _reap(self._process)

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._connection.send((method, args))
            except (OSError, ValueError) as error:  # closed, or the child is gone
                raise IndexProcessError(f"the index process is not running ({error})") from None
            return self._answer(None)

    def _answer(self, timeout: float | None) -> Any:
        try:
            if timeout is not None and not self._connection.poll(timeout):
                self.close()
                raise IndexProcessError(f"the index process did not open its index within {timeout:g} s")
            status, value = self._connection.recv()
        except (EOFError, OSError):
            try:
                code = self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise IndexProcessError(f"the index process exited (exit code {code})") from None
        if status == "error":
            raise value
        return value


def _serve(connection: Connection) -> None:
    """The child: opens the index, reports its facts, then answers calls until told to stop."""
    try:
        opener = connection.recv()
        index = opener()
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        connection.send(("error", _portable(error)))
        return
    connection.send(("ok", {"dim": index.dim, "num_items": index.num_items, "is_exact": index.is_exact,
                            "kind": index.kind}))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):  # the parent closed the socket or died
            return
        if request is None:
            os._exit(0)  # skips interpreter teardown (TensorFlow's took most of a second)
        method, args = request
        try:
            attribute = getattr(index, method)
            connection.send(("ok", attribute(*args) if callable(attribute) else attribute))
        except Exception as error:  # noqa: BLE001
            connection.send(("error", _portable(error)))


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _stop(process: subprocess.Popen, connection: Connection) -> None:
    """Tells the child to end and returns at once: this runs in whichever thread drops the last
    reference, possibly the service's event loop, and a child's exit is slow. A daemon thread
    waits for it (and kills it if it does not end)."""
    try:
        connection.send(None)
    except (OSError, ValueError):
        pass
    connection.close()
    threading.Thread(target=_reap, args=(process,), name="index-process-reaper", daemon=True).start()


def _reap(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
