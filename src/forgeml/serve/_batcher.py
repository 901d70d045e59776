"""Dynamic batching: concurrent requests queue up and run through the model together.

A batch closes when it holds ``max_batch_size`` samples, or ``max_latency``
after its first request arrived, whichever comes first. A request never makes
a batch larger than the limit: one with more samples than ``max_batch_size`` is
split into chunks that run in consecutive batches, and its results are joined
back in order. The model runs one batch at a time (``run`` awaits it), so while
it works the next batch fills up.

One bad request does not fail the others batched with it: when a model call on
several requests fails, each request runs again alone, and only those that fail
alone get the error. (An error flagged ``batch_wide``, such as an unreachable
backend, is the same for everyone and goes to every request at once.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from forgeml._core._errors import ServeError

log = logging.getLogger("forgeml.serve")


class QueueFull(ServeError):
    """The batcher's queue holds ``max_queue`` requests; try again later (HTTP 429)."""


class ShuttingDown(ServeError):
    """The batcher is closed: it takes no new requests (HTTP 503)."""


class _Item:
    __slots__ = ("arrived", "future", "x")

    def __init__(self, x: np.ndarray, future: asyncio.Future[np.ndarray], arrived: float) -> None:
        self.x = x
        self.future = future
        self.arrived = arrived


class Batcher:
    """Runs ``run(batch) -> outputs`` on batches of queued samples; see the module docs.

    ``on_batch(samples, requests, seconds)`` is called after each batch (metrics).
    Start it with :meth:`start` inside the event loop; :meth:`close` drains it.

    The batching loop wakes once per batch, not once per request: when the first
    request arrives in an empty queue, when the queue holds a full batch, at the
    first request's deadline, or on :meth:`close`.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], Awaitable[np.ndarray]],
        *,
        max_batch_size: int = 32,
        max_latency_ms: float = 5.0,
        max_queue: int = 4096,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._samples = 0  # in the queue
        self._waiter: asyncio.Future[None] | None = None
        self._wake_on_full = False  # the loop waits for a full batch, not for any request
        self._task: asyncio.Task[None] | None = None
        self._loop_: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        """Requests waiting for the model (one of more than ``max_batch_size`` samples
        counts once per chunk of that size: what ``max_queue`` limits)."""
        return len(self._queue)

    def start(self) -> None:
        self._loop_ = loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop(), name="forgeml-batcher")

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for the samples ``x`` (first axis), batched with others."""
        loop = self._loop_
        if self._closing or loop is None:
            raise ShuttingDown("The server is shutting down and takes no new requests.")
        size = self.max_batch_size
        n = len(x)
        if n <= size:
            if len(self._queue) >= self.max_queue:
                raise self._full()
            item = _Item(x, loop.create_future(), time.perf_counter())
            self._queue.append(item)
            self._queued(n)
            return await item.future
        chunks = [x[i : i + size] for i in range(0, n, size)]
        if len(self._queue) + len(chunks) > self.max_queue:
            raise self._full()
        now = time.perf_counter()
        items = [_Item(chunk, loop.create_future(), now) for chunk in chunks]
        self._queue.extend(items)
        self._queued(n)
        results = await asyncio.gather(*(item.future for item in items))
        return np.concatenate(results)

    def _full(self) -> QueueFull:
        return QueueFull(
            f"The server's queue is full ({self.max_queue} requests wait for the model; a "
            f"request of more than {self.max_batch_size} samples counts once per "
            f"{self.max_batch_size}). Retry later, or start the server with a larger "
            f"--max_queue or more --workers."
        )

    def _queued(self, n: int) -> None:
        self._samples += n
        waiter = self._waiter
        if waiter is not None and not (self._wake_on_full and self._samples < self.max_batch_size):
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None, *, full: bool) -> None:
        """Sleep until a request arrives (``full``: until a batch is full), ``timeout``
        seconds pass, or :meth:`close`."""
        assert self._loop_ is not None
        self._waiter = waiter = self._loop_.create_future()
        self._wake_on_full = full
        timer = None if timeout is None else self._loop_.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def close(self) -> None:
        """Take no new requests; finish every queued one; stop."""
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        queue = self._queue
        limit = self.max_batch_size
        while True:
            if not queue:
                if self._closing:
                    return
                await self._wait(None, full=False)
                continue
            if self._samples < limit and not self._closing and self.max_latency > 0:
                remaining = queue[0].arrived + self.max_latency - time.perf_counter()
                if remaining > 0:
                    await self._wait(remaining, full=True)
            batch: list[_Item] = []
            total = 0
            while queue and total + len(queue[0].x) <= limit:
                item = queue.popleft()
                n = len(item.x)
                self._samples -= n
                if item.future.done():  # its request was cancelled (client went away)
                    continue
                batch.append(item)
                total += n
            if batch:
                await self._run(batch, total)

    async def _run(self, batch: list[_Item], total: int) -> None:
        start = time.perf_counter()
        failed: Exception | None = None
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            outputs = await self.run(x)
            if len(outputs) != total:
                raise ServeError(
                    f"The model returned {len(outputs)} outputs for a batch of {total} samples."
                )
        except Exception as exc:
            failed = exc
        finally:
            if self.on_batch is not None:
                self.on_batch(total, len(batch), time.perf_counter() - start)
        if failed is not None:
            if len(batch) > 1 and not getattr(failed, "batch_wide", False):
                log.warning(
                    "A model call on %d requests failed (%s); running each alone so that "
                    "only the bad ones fail",
                    len(batch),
                    type(failed).__name__,
                )
                for item in batch:
                    if not item.future.done():
                        await self._run([item], len(item.x))
                return
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(failed)
            return
        offset = 0
        for item in batch:
            n = len(item.x)
            if not item.future.done():
                item.future.set_result(outputs[offset : offset + n])
            offset += n
