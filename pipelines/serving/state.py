"""``ServiceState``: what the routes of one app share (the version watcher, the limits, the
metrics, the micro-batcher), and the lookup every route that needs the model goes through."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.responses import Response

from tfcroloss.pipelines.serving.batching import Lookup, MicroBatcher, Overloaded, Rows
from tfcroloss.pipelines.serving.limits import Limits
from tfcroloss.pipelines.serving.metrics import Metrics
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.tf_serving import ApiError
from tfcroloss.pipelines.serving.watcher import ModelWatcher

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 for a full lookup queue asks the client to wait (``Retry-After``)."""


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

    async def lookup(
        self,
        retriever: Retriever,
        histories: Sequence[Sequence[str]],
        k: int | None,
        exclude_history: bool,
        finish: Callable[[Retriever, Rows], bytes],
    ) -> Response:
        """Queues a lookup and answers with what ``finish`` makes of its rows (JSON bytes);
        503 with ``Retry-After`` when the queue is full, 500 when the lookup fails."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        try:
            self.batcher.submit(Lookup(retriever, histories, k, exclude_history, finish, future), wake=False)
        except Overloaded as error:
            raise ApiError(503, str(error), {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        if not self.wake_scheduled:  # once per loop iteration: its requests share a batch
            self.wake_scheduled = True
            loop.call_soon(self._wake_batcher)
        try:
            body = await future
        except ApiError:
            raise
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
