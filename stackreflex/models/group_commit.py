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


class _Pending:
    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Write[Any]):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs writes in shared transactions opened by ``transaction()``."""

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]):
        self._transaction = transaction
        self._queue: list[_Pending] = []
        self._changed = threading.Condition(threading.Lock())
        #: a transaction is under way (or the writer is held by :meth:`exclusive`)
        self._leading = False

    def load(self) -> int:
        """Writes waiting, and one for a transaction under way (read without the lock: a hint)."""
        return len(self._queue) + self._leading

    def run(self, work: Write[T]) -> T:
        """Run ``work`` in a transaction (maybe shared); return its result once committed."""
        own, called = _Pending(work), time.perf_counter()
        with self._changed:
            self._queue.append(own)
            while not own.done and self._leading:
                self._changed.wait()
            if not own.done:  # nobody took it along: lead a transaction for all that wait
                batch, self._queue, self._leading = self._queue, [], True
        if not own.done:
            try:
                self._commit(batch)
            except BaseException:
                # This thread is being interrupted (time limit, shutdown): the others' writes go
                # back to the queue for the next thread that leads.
                with self._changed:
                    self._queue[:0] = [pending for pending in batch if pending is not own and not pending.done]
                raise
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        AUDIT_WRITE_DURATION.observe(time.perf_counter() - called)
        if own.error is not None:
            raise own.error
        return cast(T, own.result)  # what ``work`` returned

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer: no write runs until the ``with`` block ends."""
        with self._changed:
            while self._leading:
                self._changed.wait()
            self._leading = True
        try:
            yield
        finally:
            with self._changed:
                self._leading = False
                self._changed.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self._transaction() as connection:
                results = [pending.work(connection) for pending in batch]
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
