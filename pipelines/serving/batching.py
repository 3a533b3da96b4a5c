"""Micro-batching of lookups: every request waiting is answered by one user-tower call and one
batched index search.

``MicroBatcher.submit(lookup)`` queues a ``Lookup`` (one request: its histories, ``k``, whether
to exclude the history, and the ``Retriever`` it started with) and returns at once. Two worker
threads form a pipeline. The first takes every lookup waiting (up to ``max_rows`` histories,
waiting at most ``max_delay`` seconds after the oldest for more to arrive) and runs the user tower
once for all their histories; the second searches once per distinct ``(k, exclude_history)`` and
hands each lookup its rows (``Lookup.finish``), which turns them into the response. So the user
tower runs on one batch while the index searches the previous one (docs/serving.md has the
gain). TensorFlow and ScaNN release the GIL, so the HTTP event loop keeps parsing requests
meanwhile.

The queue is bounded (``max_queue`` histories): ``submit`` raises ``Overloaded`` beyond it, so a
burst gets fast refusals instead of an unbounded wait.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfcroloss.pipelines.serving.retriever import Retriever

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The lookup queue is full; the request should be retried later."""


@dataclasses.dataclass(frozen=True)
class Rows:
    """What a lookup gets back: its histories' rows of one batch.

    ``users`` float32 ``[B, dim]``, ``history_ids`` int64 ``[B, L]`` (0 = unknown or padding; the
    batch's width, at least the longest history of this lookup). ``scores`` and ``item_ids``
    (``[B, k]``, ``tau * cosine`` and item ids, -1 where missing) are None when the lookup asked
    for no search (``k`` None).
    """

    users: np.ndarray
    history_ids: np.ndarray
    scores: np.ndarray | None
    item_ids: np.ndarray | None


@dataclasses.dataclass(eq=False)
class Lookup:
    """One request's histories. ``finish(retriever, rows)`` runs on the worker thread; its
    return value (or exception) is handed back with the lookup to the batcher's ``deliver``,
    which finds the waiting request by ``token``."""

    retriever: Retriever
    histories: Sequence[Sequence[str]]
    k: int | None
    exclude_history: bool
    finish: Callable[[Retriever, Rows], Any]
    token: Any = None
    queued_at: float = dataclasses.field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs queued ``Lookup``s in batches on two pipelined worker threads (see the module docstring).

    ``deliver(outcomes)`` gets each batch's ``(lookup, result, error)`` triples at once (one
    wake-up of an event loop per batch, not per request); ``on_batch(histories)`` the size of
    each batch (for metrics).
    """

    def __init__(
        self,
        deliver: Callable[[list[tuple[Lookup, Any, BaseException | None]]], None],
        *,
        max_rows: int = 64,
        max_delay: float = 0.001,
        max_queue: int = 512,
        on_batch: Callable[[int], None] | None = None,
    ):
        if max_rows < 1 or max_queue < 1 or max_delay < 0:
            raise ValueError(
                f"max_rows and max_queue must be >= 1 and max_delay >= 0, got {max_rows}, "
                f"{max_queue}, {max_delay}"
            )
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.max_queue = max_queue
        self._deliver = deliver
        self._on_batch = on_batch or (lambda size: None)
        self._queue: collections.deque[Lookup] = collections.deque()
        self._queued_rows = 0
        self._ready = threading.Condition()
        self._stopping = False
        # Two stages, so that the user tower runs on one batch while the index searches another.
        self._encoded: queue.Queue[Encoded | None] = queue.Queue(maxsize=1)
        self._threads = [
            threading.Thread(target=self._encode_work, name="micro-batcher", daemon=True),
            threading.Thread(target=self._search_work, name="micro-batcher-search", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued_rows(self) -> int:
        """Histories waiting (not counting the batch being run)."""
        return self._queued_rows

    def submit(self, lookup: Lookup, *, wake: bool = True) -> None:
        """Queues ``lookup``; raises ``Overloaded`` if its histories do not fit in the queue.

        ``wake=False`` leaves the worker asleep until ``wake()``: an event loop queues every
        request of one loop iteration, then wakes the worker once, so they share a batch.
        """
        rows = len(lookup.histories)
        with self._ready:
            if self._stopping:
                raise Overloaded("the service is shutting down")
            if self._queued_rows + rows > self.max_queue:
                raise Overloaded(
                    f"the lookup queue is full ({self._queued_rows} of {self.max_queue} histories "
                    "waiting); retry later"
                )
            self._queue.append(lookup)
            self._queued_rows += rows
            if wake or self._queued_rows >= self.max_rows:
                self._ready.notify()

    def wake(self) -> None:
        """Lets the worker take what is queued (see ``submit``)."""
        with self._ready:
            self._ready.notify()

    def stop(self) -> None:
        """Answers what is queued, then ends the worker thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[Lookup] | None:
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            deadline = self._queue[0].queued_at + self.max_delay
            while self._queued_rows < self.max_rows and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch, rows = [], 0
            while self._queue and (not batch or rows + len(self._queue[0].histories) <= self.max_rows):
                lookup = self._queue.popleft()
                batch.append(lookup)
                rows += len(lookup.histories)
            self._queued_rows -= rows
            return batch

    def _encode_work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                by_retriever: dict[int, list[Lookup]] = {}
                for lookup in batch:  # two only while a new version takes over
                    by_retriever.setdefault(id(lookup.retriever), []).append(lookup)
                for lookups in by_retriever.values():
                    self._on_batch(sum(len(lookup.histories) for lookup in lookups))
                    encoded = encode_lookups(lookups)
                    if isinstance(encoded, Encoded):
                        self._encoded.put(encoded)  # waits while the search stage is behind
                    else:
                        self._hand_over(encoded)
        finally:
            self._encoded.put(None)

    def _search_work(self) -> None:
        while (encoded := self._encoded.get()) is not None:
            try:
                outcomes = search_lookups(encoded)
            except Exception as error:  # noqa: BLE001 - a bug fails its batch, not the stage
                logger.exception("the search stage failed on a batch")
                outcomes = [(lookup, None, error) for lookup in encoded.lookups]
            self._hand_over(outcomes)

    def _hand_over(self, outcomes: list[tuple[Lookup, Any, BaseException | None]]) -> None:
        try:
            self._deliver(outcomes)
        except Exception:  # e.g. the event loop closed: the worker goes on
            logger.exception("could not deliver lookup results")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Lookups of one Retriever after the user tower: their histories' rows of ``users`` and
    ``history_ids``, ``starts[n]:starts[n + 1]`` for lookup ``n``."""

    lookups: Sequence[Lookup]
    users: np.ndarray
    history_ids: np.ndarray
    starts: np.ndarray


def run_lookups(lookups: Sequence[Lookup]) -> list[tuple[Lookup, Any, BaseException | None]]:
    """Runs lookups of one Retriever: one user-tower call, one search per distinct
    ``(k, exclude_history)``; returns each lookup with its ``finish`` result or error."""
    encoded = encode_lookups(lookups)
    return search_lookups(encoded) if isinstance(encoded, Encoded) else encoded


def encode_lookups(lookups: Sequence[Lookup]) -> Encoded | list[tuple[Lookup, Any, BaseException]]:
    """The first stage of ``run_lookups``: one user-tower call for all histories (or every
    lookup with the error)."""
    retriever = lookups[0].retriever
    histories = [history for lookup in lookups for history in lookup.histories]
    try:
        users, history_ids = retriever.encode(histories)
    except Exception as error:  # noqa: BLE001 - every lookup of the batch gets the error
        logger.exception("the user tower failed on a batch of %d histories", len(histories))
        return [(lookup, None, error) for lookup in lookups]
    return Encoded(lookups, users, history_ids, np.cumsum([0, *(len(lookup.histories) for lookup in lookups)]))


def search_lookups(encoded: Encoded) -> list[tuple[Lookup, Any, BaseException | None]]:
    """The second stage of ``run_lookups``: the searches and each lookup's ``finish``."""
    lookups, users, history_ids, starts = encoded.lookups, encoded.users, encoded.history_ids, encoded.starts
    retriever = lookups[0].retriever
    groups: dict[tuple[int, bool], list[int]] = {}
    for number, lookup in enumerate(lookups):
        if lookup.k is not None:
            groups.setdefault((lookup.k, lookup.exclude_history), []).append(number)
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    outcomes: dict[int, BaseException] = {}
    for (k, exclude), numbers in groups.items():
        rows = np.concatenate([np.arange(starts[n], starts[n + 1]) for n in numbers])
        try:
            scores, ids = retriever.search(users[rows], k, history_ids[rows] if exclude else None)
        except Exception as error:  # noqa: BLE001
            logger.exception("the index search failed on a batch of %d histories", len(rows))
            outcomes.update(dict.fromkeys(numbers, error))
            continue
        offset = 0
        for n in numbers:
            size = starts[n + 1] - starts[n]
            found[n] = scores[offset : offset + size], ids[offset : offset + size]
            offset += size
    results = []
    for number, lookup in enumerate(lookups):
        if number in outcomes:
            results.append((lookup, None, outcomes[number]))
            continue
        rows = slice(starts[number], starts[number + 1])
        scores, ids = found.get(number, (None, None))
        try:
            result = lookup.finish(retriever, Rows(users[rows], history_ids[rows], scores, ids))
        except Exception as error:  # noqa: BLE001
            results.append((lookup, None, error))
        else:
            results.append((lookup, result, None))
    return results
