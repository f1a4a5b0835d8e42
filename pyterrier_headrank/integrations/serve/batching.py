"""The batching queue: requests that arrive together are scored together, by one worker thread, from a bounded queue.

One process holds one loaded model, and one thread runs it: the model is never asked for two forward passes at once
(on a CPU they would only share the same cores; on a GPU they would share its memory), and requests that arrive
while it is busy wait in a queue of at most ``max_queue`` requests. When the worker is free it takes the next
request, waits up to ``batch_wait`` for more to arrive (a short window: a few milliseconds), and scores up to
``max_batch`` of them in one call, where their prompt windows share forward passes as ``batch_size`` allows.

Nothing waits forever: :meth:`BatchQueue.submit` refuses a request at once when the queue is full
(:class:`QueueFull`, which the app answers with 429), and the caller bounds its wait for the result (the app answers
503 after ``request_timeout_s``); a request given up on before it was scored is skipped, not scored for nobody.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Callable, Generic, List, Optional, Sequence, TypeVar, Union

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already: try again later."""


class QueueStopped(Exception):
    """The service is shutting down (or has not started): no more requests are scored."""


class BatchQueue(Generic[Item, Result]):
    """A bounded queue in front of ``score_batch``, drained by one worker thread (see the module docstring).

    Args:
        score_batch: scores a list of items in one call; returns one result per item, in order, where a result that
            is an ``Exception`` is raised to that item's caller alone.
        max_queue: items that may wait; :meth:`submit` raises :class:`QueueFull` beyond it.
        max_batch: items scored in one call at most.
        batch_wait: seconds the worker waits for more items after the first one, when fewer than ``max_batch`` wait.
        on_start: run on the worker thread before the first item (the service loads and warms the model there);
            if it raises, every item is refused with that error.
        on_batch: called with the number of items of each call (for metrics).
    """

    def __init__(self, score_batch: Callable[[List[Item]], Sequence[Union[Result, Exception]]], max_queue: int = 64,
                 max_batch: int = 8, batch_wait: float = 0.005, on_start: Optional[Callable[[], None]] = None,
                 on_batch: Callable[[int], None] = lambda n: None):
        if not (max_queue >= 1 and max_batch >= 1 and 0 <= batch_wait < float("inf")):  # NaN fails every test
            raise ValueError(f"BatchQueue: max_queue={max_queue!r} and max_batch={max_batch!r} must be >= 1 and "
                             f"batch_wait={batch_wait!r} a finite number of seconds >= 0")
        self._score_batch, self._on_start, self._on_batch = score_batch, on_start, on_batch
        self.max_queue, self.max_batch, self.batch_wait = int(max_queue), int(max_batch), float(batch_wait)
        self._waiting: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self.start_error: Optional[BaseException] = None

    # ---- the callers' side --------------------------------------------------------------------------------------
    def submit(self, item: Item) -> "Future[Result]":
        """Queue ``item``; its result (or error) arrives in the returned future. Raises :class:`QueueFull` at once
        when ``max_queue`` items wait, :class:`QueueStopped` when the queue is stopped or not started."""
        future: Future = Future()
        with self._cond:
            if self._stopping or self._thread is None:
                raise QueueStopped("the rerank service is not running")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (max_queue={self.max_queue})")
            self._waiting.append((item, future))
            self._cond.notify()
        return future

    def depth(self) -> int:
        """Items waiting (not yet taken by the worker)."""
        return len(self._waiting)

    # ---- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (once; later calls do nothing)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="headrank-serve-scorer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new items, fail the waiting ones with :class:`QueueStopped`, and let the current call finish."""
        with self._cond:
            self._stopping = True
            pending = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
            thread = self._thread
        for _, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(QueueStopped("the rerank service is shutting down"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- the worker ---------------------------------------------------------------------------------------------
    def _next_batch(self) -> Optional[list]:
        """The next items to score together (None when stopping): waits for one, then up to ``batch_wait`` for more."""
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = time.monotonic() + self.batch_wait
            while len(self._waiting) < self.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]

    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except BaseException as err:  # reported by /ready and to every request
                self.start_error = err
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not live:  # every caller gave up (timed out) while waiting
                continue
            if self.start_error is not None:
                results: Sequence = [self.start_error] * len(live)
            else:
                try:
                    results = self._score_batch([item for item, _ in live])
                    if len(results) != len(live):
                        raise RuntimeError(f"score_batch returned {len(results)} results for {len(live)} items")
                except BaseException as err:  # the worker must outlive any one call
                    results = [err] * len(live)
                self._on_batch(len(live))
            for (_, future), result in zip(live, results):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
