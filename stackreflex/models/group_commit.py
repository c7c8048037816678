"""Group commit: the writes that arrive while one transaction commits share the next one.

Every run costs the audit log a few small writes (accept, claim, finish, steps). Made
one transaction each, they queue on the database's write lock (SQLite has one writer;
PostgreSQL flushes its log at every commit), and the queue, not the work, sets the
pace. Here a thread that finds a transaction under way leaves its write in a list; when
that transaction ends, one waiting thread leads the next for every write in the list,
and each caller returns as soon as its own write is committed: a caller whose write was
carried along never waits for the transaction after it (the lock is held only to touch
the list, never across the database's I/O).
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Connection

from ..core.metrics import AUDIT_WRITE_DURATION

T = TypeVar("T")

#: A write: statements run on the connection of an open transaction; its result goes back to the caller.
Write = Callable[[Connection], T]


#: How long a waiting writer sleeps before it looks again by itself (seconds): a wake-up lost
#: to a thread interrupted while it was being handed the writer costs the others this, not a hang.
RECHECK = 1.0


class _Pending:
    """One caller's write (or, with ``work=None``, a turn to hold the writer), and what its
    thread sleeps on between looks at whether it is committed or may lead."""

    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Write[Any] | None):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held while nobody has woken it: released only under the mutex
        self.wake.acquire()


class GroupCommit:
    """Runs writes in shared transactions opened by ``transaction()``.

    A waiting caller sleeps on a lock of its own, woken when its write is committed or
    when the writer comes free (the oldest waiter first); it then looks for itself, under the
    lock, which it is. (Sleeping on one shared condition, every commit woke every waiting
    thread to find, mostly, that it had to sleep again: some thirty thread switches for each
    event.) Nobody is handed the writer: a woken thread takes it if it is still free, so a
    thread interrupted while waiting (a time limit, a shutdown) leaves nothing held.
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]):
        self._transaction = transaction
        #: callers waiting (not the writes of the transaction under way)
        self._queue: list[_Pending] = []
        self._mutex = threading.Lock()
        #: a transaction is under way (or the writer is held by :meth:`exclusive`)
        self._leading = False

    def load(self) -> int:
        """Writes waiting, and one for a transaction under way (read without the lock: a hint)."""
        return len(self._queue) + self._leading

    def run(self, work: Write[T]) -> T:
        """Run ``work`` in a transaction (maybe shared); return its result once committed."""
        own, called = _Pending(work), time.perf_counter()
        if self._take_turn(own):  # leading: a transaction for every write that waits
            batch: list[_Pending] = []
            try:
                with self._mutex:
                    batch = [pending for pending in self._queue if pending.work is not None]
                    self._queue = [pending for pending in self._queue if pending.work is None]
                self._commit(batch)
            except BaseException:
                # This thread is being interrupted (time limit, shutdown): the others' writes go
                # back to the queue for the next thread that leads.
                with self._mutex:
                    self._queue[:0] = [pending for pending in batch if pending is not own and not pending.done]
                raise
            finally:
                self._hand_over(batch)
        AUDIT_WRITE_DURATION.observe(time.perf_counter() - called)
        if own.error is not None:
            raise own.error
        return cast(T, own.result)  # what ``work`` returned

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer: no write runs until the ``with`` block ends."""
        self._take_turn(_Pending(None))  # never part of a batch: it returns leading
        try:
            yield
        finally:
            self._hand_over([])

    def _take_turn(self, own: _Pending) -> bool:
        """Wait until ``own`` is committed (False) or holds the writer (True, out of the queue)."""
        with self._mutex:
            self._queue.append(own)
        took = False
        try:
            while True:
                with self._mutex:
                    if own.done:
                        return False
                    if not self._leading:
                        self._leading = took = True
                        if own.work is None:
                            self._queue.remove(own)  # a writer's own write is in the batch it takes
                        return True
                own.wake.acquire(timeout=RECHECK)
        except BaseException:
            # Interrupted while waiting: the write stays queued (the next leader makes it), the
            # turn to hold the writer does not, and a writer just taken is freed again.
            with self._mutex:
                if own.work is None and own in self._queue:
                    self._queue.remove(own)
            if took:
                self._hand_over([])
            raise

    def _hand_over(self, batch: list[_Pending]) -> None:
        """Free the writer; wake the oldest caller still waiting (it may lead), then those
        whose writes were committed."""
        with self._mutex:
            self._leading = False
            for pending in self._queue[:1] + [pending for pending in batch if pending.done]:
                if pending.wake.locked():  # not woken already, and not yet looked since
                    pending.wake.release()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self._transaction() as connection:
                results = [cast(Write[Any], pending.work)(connection) for pending in batch]  # writes only
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            # One write failed and took the others' transaction with it: give each its own,
            # so only the failing one fails.
            for pending in batch:
                self._commit([pending])
            return
        for pending, result in zip(batch, results, strict=False):
            pending.result, pending.done = result, True
