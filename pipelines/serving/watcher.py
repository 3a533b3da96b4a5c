"""``ModelWatcher``: the Retriever of the latest version under a model directory, kept current by
a background thread."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.version import list_versions, version_state

logger = logging.getLogger(__name__)

ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\])+")
"""The directories of an absolute path (``/srv/models/`` of ``/srv/models/x.pb``), to remove."""

Loader = Callable[[Path, bool], Retriever]
"""``loader(version_dir, isolate_index)``: a version directory's Retriever (``Retriever.load``)."""


class ModelWatcher:
    """Holds the Retriever of the latest version under ``model_root`` and keeps it current, as
    TF Serving's file-system source and its default version policy do.

    A version is its folder: its number is the folder's name (``version.version_number``) and
    its files' state (``version_state``) tells when they change. The newest version is served: a
    newer one, or new files in the one served (an index built or rebuilt), is loaded and
    warmed, then swapped in. One that fails to load (e.g. seen half-copied) is tried again when
    its files change, and meanwhile the version served goes on. When the folder of the version
    served disappears, the newest remaining version is loaded and served; if none is left, the
    version is unloaded (``current`` is None, ``unloaded`` its number) until one appears. A
    version whose index process ended (killed, out of memory) is loaded again, at once when
    ``wake`` is called.

    Where each version's index lives: loading a ScaNN index holds the GIL of its process for
    its whole duration, which would freeze the event loop and every request in flight. So
    every version loaded while the service answers (a new version, a rebuilt index, a reload)
    opens its index in a child process (``IndexProcess``). The first version, loaded before the
    service answers anything, opens it in this process: searching it there skips a process
    round trip per micro-batch (docs/serving.md, "How lookups run", has the figures). A restart
    (or a rolling deployment) brings a switched service back to that path. ``loader`` defaults
    to ``Retriever.load``.
    """

    def __init__(
        self,
        model_root: str | Path,
        *,
        poll_seconds: float = 10.0,
        loader: Loader | None = None,
        on_load: Callable[[Retriever, float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        on_unload: Callable[[], None] | None = None,
    ):
        self.model_root = Path(model_root)
        self.poll_seconds = poll_seconds
        self.failed: tuple[int, str] | None = None
        """The latest version that failed to load, and why, without server paths (until one
        loads or its folder is removed)."""
        self.unloaded: int | None = None
        """The version unloaded because its folder was removed and no other was left."""
        self._loader = loader or load_retriever
        self._on_load = on_load or (lambda retriever, seconds: None)
        self._on_failure = on_failure or (lambda: None)
        self._on_unload = on_unload or (lambda: None)
        self._stop = threading.Event()
        self._poll_now = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_key: tuple[int, tuple] | None = None
        key = self._latest_key()
        if key is None:
            raise FileNotFoundError(f"{self.model_root} holds no exported version (saved_models/NAME/<version>/)")
        self.current: Retriever | None = self._load(key[0], isolate_index=False)  # nothing is answered yet
        self._key: tuple[int, tuple] | None = key

    def _latest_key(self) -> tuple[int, tuple] | None:
        versions = list_versions(self.model_root)
        if not versions:
            return None
        return versions[-1], version_state(self.model_root / str(versions[-1]))

    def _load(self, version: int, *, isolate_index: bool = True) -> Retriever:
        started = time.perf_counter()
        retriever = self._loader(self.model_root / str(version), isolate_index)
        k = min(100, retriever.num_items)
        for size in (1, 8):  # traces and warms the graph and the index before any request sees them
            retriever.recommend_batch([["warm-up"]] * size, k=k)
        self._on_load(retriever, time.perf_counter() - started)
        return retriever

    def refresh(self) -> bool:
        """Loads and switches to the newest version if it is not the one served (a newer one,
        new files of the one served, or the newest remaining after the served one's folder was
        removed), or reloads the one served if its index process ended; True if it switched."""
        if self.failed is not None and not (self.model_root / str(self.failed[0])).is_dir():
            self._failed_key = self.failed = None  # removed: nothing left to report
        key = self._latest_key()
        if key is None:
            if self.current is not None and not (self.model_root / str(self._key[0])).is_dir():
                logger.warning("version %d was removed from %s and no version is left; unloaded it", self._key[0], self.model_root)
                self.current, self.unloaded, self._key = None, self._key[0], None
                self._on_unload()
            return False
        if key == self._key and not self.current.alive:
            logger.error("the index process of %s version %d ended; loading it again", self.model_root, key[0])
        elif key == self._key or key == self._failed_key:
            return False
        try:
            retriever = self._load(key[0])
        except Exception as error:
            served = "nothing" if self._key is None else f"version {self._key[0]}"
            logger.exception("could not load %s version %d; still serving %s", self.model_root, key[0], served)
            self._failed_key, self.failed = key, (key[0], self.public_message(f"{type(error).__name__}: {error}"))
            self._on_failure()
            return False
        if self._key is not None and key[0] < self._key[0]:
            logger.warning("version %d was removed from %s; the newest remaining is %d", self._key[0], self.model_root, key[0])
        self.current, self._key = retriever, key  # one reference swap; old lookups keep the old object
        self._failed_key = self.failed = self.unloaded = None
        logger.info("now serving %s version %d (%s)", self.model_root, key[0], retriever.index_info["kind"])
        return True

    def public_message(self, message: str) -> str:
        """``message`` without the server's directories: the model directory's path becomes its
        name (``tiny/2/saved_model.pb``), and any other absolute path its last component."""
        for root in {str(self.model_root.resolve()), str(self.model_root.absolute()), str(self.model_root)}:
            message = message.replace(root, self.model_root.name)
        return ABSOLUTE_PATH.sub("", message)

    def wake(self) -> None:
        """Looks at the versions now rather than at the next poll (e.g. an index process ended)."""
        self._poll_now.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poll_now.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while True:
            self._poll_now.wait(self.poll_seconds)
            self._poll_now.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # e.g. the directory vanished; keep serving and keep polling
                logger.exception("could not look for new versions under %s", self.model_root)


def load_retriever(version_dir: Path, isolate_index: bool) -> Retriever:
    """The default ``Loader``: ``Retriever.load``."""
    return Retriever.load(version_dir, isolate_index=isolate_index)
