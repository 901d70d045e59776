"""Dynamic batching: concurrent requests queue up and run through the model together.

A batch closes when it holds ``max_batch_size`` samples, or ``max_latency``
after its first request arrived, whichever comes first. A request never makes
a batch larger than the limit: one with more samples than ``max_batch_size`` is
split into chunks that run in consecutive batches, and its results are joined
back in order. The model runs one batch at a time (``run`` awaits it), so while
it works the next batch fills up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from forgeml._core._errors import ServeError


class QueueFull(ServeError):
    """The batcher's queue holds ``max_queue`` requests; try again later (HTTP 429)."""


class ShuttingDown(ServeError):
    """The batcher is closed: it takes no new requests (HTTP 503)."""


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Runs ``run(batch) -> outputs`` on batches of queued samples; see the module docs.

    ``on_batch(samples, requests, seconds)`` is called after each batch (metrics).
    Start it with :meth:`start` inside the event loop; :meth:`close` drains it.
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
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        """Requests (chunks) waiting for the model."""
        return len(self._queue)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="forgeml-batcher")

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for the samples ``x`` (first axis), batched with others."""
        if self._closing or self._wake is None:
            raise ShuttingDown("The server is shutting down and takes no new requests.")
        size = self.max_batch_size
        chunks = [x] if len(x) <= size else [x[i : i + size] for i in range(0, len(x), size)]
        if len(self._queue) + len(chunks) > self.max_queue:
            raise QueueFull(
                f"The server's queue is full ({self.max_queue} requests wait for the model). "
                f"Retry later, or start the server with a larger --max_queue or more --workers."
            )
        loop = asyncio.get_running_loop()
        items = [_Item(chunk, loop.create_future()) for chunk in chunks]
        self._queue.extend(items)
        self._wake.set()
        if len(items) == 1:
            return await items[0].future
        results = await asyncio.gather(*(item.future for item in items))
        return np.concatenate(results)

    async def close(self) -> None:
        """Take no new requests; finish every queued one; stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            deadline = queue[0].arrived + self.max_latency
            batch: list[_Item] = []
            total = 0
            while True:
                while queue and total + len(queue[0].x) <= self.max_batch_size:
                    item = queue.popleft()
                    if item.future.done():  # its request was cancelled (client went away)
                        continue
                    batch.append(item)
                    total += len(item.x)
                if queue or total >= self.max_batch_size or self._closing:
                    break  # full (the next one does not fit), or draining: run now
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
            if batch:
                await self._run(batch, total)

    async def _run(self, batch: list[_Item], total: int) -> None:
        start = time.perf_counter()
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            outputs = await self.run(x)
            if len(outputs) != total:
                raise ServeError(
                    f"The model returned {len(outputs)} outputs for a batch of {total} samples."
                )
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(total, len(batch), time.perf_counter() - start)
        offset = 0
        for item in batch:
            n = len(item.x)
            if not item.future.done():
                item.future.set_result(outputs[offset : offset + n])
            offset += n
