"""The micro-batcher's pipeline, with a stub in place of a Retriever (no model, no index)."""

import threading

import numpy as np

from tfcroloss.pipelines.serving import batching
from tfcroloss.pipelines.serving.batching import Lookup, MicroBatcher


class StubRetriever:
    """Encodes every history as a zero vector; the first search waits (up to 5 s) for a second
    batch to be encoded, and notes whether it was."""

    def __init__(self):
        self.encoded = 0
        self.first_search_started = threading.Event()
        self.second_batch_encoded = threading.Event()
        self.overlapped: bool | None = None

    def encode(self, histories):
        self.encoded += 1
        if self.encoded == 2:
            self.second_batch_encoded.set()
        return np.zeros((len(histories), 2), np.float32), np.zeros((len(histories), 1), np.int64)

    def search(self, users, k, exclude):
        if self.overlapped is None:
            self.first_search_started.set()
            self.overlapped = self.second_batch_encoded.wait(5)
        return np.zeros((len(users), k), np.float32), np.ones((len(users), k), np.int64)


def test_the_user_tower_runs_on_the_next_batch_while_the_index_searches():
    stub = StubRetriever()
    delivered = []
    batcher = MicroBatcher(delivered.extend, max_delay=0)
    batcher.submit(Lookup(stub, [["a"]], 3, False, lambda retriever, rows: ("first", rows.item_ids.tolist())))
    assert stub.first_search_started.wait(5)
    batcher.submit(Lookup(stub, [["b"], ["c"]], 2, True, lambda retriever, rows: ("second", rows.item_ids.tolist())))
    batcher.stop()
    assert stub.overlapped is True
    assert [(result, error) for _, result, error in delivered] == [
        (("first", [[1, 1, 1]]), None),
        (("second", [[1, 1], [1, 1]]), None),
    ]


def failed_then_answered(stub):
    """Two lookups in turn (the second once the first is delivered): what each got, the
    error's type name for a failure."""
    delivered, answered = [], threading.Semaphore(0)

    def deliver(outcomes):
        delivered.extend(outcomes)
        answered.release()

    batcher = MicroBatcher(deliver, max_delay=0)
    batcher.submit(Lookup(stub, [["bad"]], 1, False, lambda retriever, rows: "answered"))
    assert answered.acquire(timeout=5)
    batcher.submit(Lookup(stub, [["good"]], 1, False, lambda retriever, rows: "answered"))
    batcher.stop()
    return [type(error).__name__ if error else result for _, result, error in delivered]


def test_a_failing_user_tower_fails_only_its_batch():
    class Failing(StubRetriever):
        def encode(self, histories):
            if histories == [["bad"]]:
                raise RuntimeError("the user tower broke")
            return super().encode(histories)

    stub = Failing()
    stub.overlapped = True  # searches do not wait
    assert failed_then_answered(stub) == ["RuntimeError", "answered"]


def test_the_search_stage_survives_an_unexpected_error(monkeypatch):
    real_search_lookups, calls = batching.search_lookups, []

    def search_lookups(encoded):
        calls.append(encoded)
        if len(calls) == 1:
            raise ValueError("a bug")
        return real_search_lookups(encoded)

    monkeypatch.setattr(batching, "search_lookups", search_lookups)
    stub = StubRetriever()
    stub.overlapped = True
    assert failed_then_answered(stub) == ["ValueError", "answered"]
