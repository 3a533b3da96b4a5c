"""``ServiceState``: what the routes of one app share (the version watcher, the limits, the
metrics, the micro-batcher), whether lookups can be answered now (``unavailable``), and the
lookup every route that needs the model goes through."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.responses import Response

from tfcroloss.pipelines.serving.batching import Lookup, MicroBatcher, Overloaded, Rows
from tfcroloss.pipelines.serving.index_process import IndexProcessError
from tfcroloss.pipelines.serving.limits import Limits
from tfcroloss.pipelines.serving.metrics import Metrics
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.tf_serving import ApiError
from tfcroloss.pipelines.serving.watcher import ModelWatcher

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 asks the client to wait (``Retry-After``): a full lookup queue, an index process
being reloaded, no version."""


def unavailable_error(reason: str) -> ApiError:
    """503 with ``Retry-After``: lookups cannot be answered now, for ``reason``."""
    return ApiError(503, reason, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def index_ended(version: int) -> str:
    return f"the index process of version {version} ended; it is being reloaded"


@dataclasses.dataclass(eq=False)
class ServiceState:
    """One app's shared state; the routers get it when the app is built. ``batcher`` exists
    while the app runs (``start`` to ``stop``, its lifespan)."""

    watcher: ModelWatcher
    limits: Limits
    metrics: Metrics
    model_name: str
    poll_seconds: float
    batcher: MicroBatcher | None = None
    wake_scheduled: bool = False
    """Whether the batcher's wake-up is already scheduled in this turn of the event loop."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts the micro-batcher, answering on ``loop``, and the version watcher."""

        def deliver(outcomes: list) -> None:
            loop.call_soon_threadsafe(settle_all, outcomes)

        self.batcher = MicroBatcher(
            deliver,
            max_rows=self.limits.batch_rows,
            max_delay=self.limits.batch_delay_ms / 1000,
            max_queue=self.limits.max_queue,
            on_batch=self.metrics.batch_size.observe,
        )
        self.metrics.queue.set_function(lambda: self.batcher.queued_rows if self.batcher else 0)
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.batcher.stop()

    def unavailable(self) -> str | None:
        """Why lookups cannot be answered now (no version, its index process ended and is being
        reloaded, the lookup queue full), or None when they can."""
        retriever = self.watcher.current
        if retriever is None:
            return self.no_version()
        if not retriever.alive:
            self.watcher.wake()
            return index_ended(retriever.version)
        if self.batcher is not None and self.batcher.queued_rows >= self.limits.max_queue:
            return f"the lookup queue is full ({self.limits.max_queue} histories waiting)"
        return None

    def served(self) -> Retriever:
        """The Retriever to answer with (``ready``); a 503 ``ApiError`` when there is none."""
        retriever = self.watcher.current
        if retriever is None:
            raise unavailable_error(self.no_version())
        return self.ready(retriever)

    def ready(self, retriever: Retriever) -> Retriever:
        """``retriever``, or a 503 ``ApiError`` if its index process ended (the watcher is woken
        to reload it)."""
        if not retriever.alive:
            self.watcher.wake()
            raise unavailable_error(index_ended(retriever.version))
        return retriever

    def no_version(self) -> str:
        return f"no version to serve: version {self.watcher.unloaded} was removed and none is left"

    async def lookup(
        self,
        retriever: Retriever,
        histories: Sequence[Sequence[str]],
        k: int | None,
        exclude_history: bool,
        finish: Callable[[Retriever, Rows], bytes],
    ) -> Response:
        """Queues a lookup and answers with what ``finish`` makes of its rows (JSON bytes);
        503 with ``Retry-After`` when the queue is full or the index process ended meanwhile,
        500 when the lookup fails otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        try:
            self.batcher.submit(Lookup(retriever, histories, k, exclude_history, finish, future), wake=False)
        except Overloaded as error:
            raise unavailable_error(str(error)) from None
        if not self.wake_scheduled:  # once per loop iteration: its requests share a batch
            self.wake_scheduled = True
            loop.call_soon(self._wake_batcher)
        try:
            body = await future
        except ApiError:
            raise
        except IndexProcessError:
            self.watcher.wake()
            raise unavailable_error(index_ended(retriever.version)) from None
        except Exception as error:
            logger.error("lookup failed: %s: %s", type(error).__name__, error)
            raise ApiError(500, f"the lookup failed ({type(error).__name__}); see the server log") from None
        return Response(body, 200, None, "application/json")

    def _wake_batcher(self) -> None:
        self.wake_scheduled = False
        self.batcher.wake()


def settle_all(outcomes: list[tuple[Lookup, Any, BaseException | None]]) -> None:
    """Answers the requests of one batch (on the event loop; ``token`` is each one's future)."""
    for lookup, result, error in outcomes:
        future = lookup.token
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
