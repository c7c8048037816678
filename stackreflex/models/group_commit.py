"""Group commit: the writes that arrive while one transaction commits share the next one.

Every run costs the audit log a few small writes (accept, claim, finish, steps). Made
one transaction each, they queue on the database's write lock (SQLite has one writer;
PostgreSQL flushes its log at every commit), and the queue, not the work, sets the
pace. Here a thread that finds the writer busy leaves its write in a list; whichever
thread takes the writer next runs every write in that list in one transaction, and
each caller still returns only once its own write is committed.
"""

import threading
from contextlib import AbstractContextManager
from typing import Any, Callable, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")

#: A write: statements run on the connection of an open transaction; its result goes back to the caller.
Write = Callable[[Connection], T]


class _Pending:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Write):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs writes in shared transactions opened by ``transaction()``."""

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]):
        self._transaction = transaction
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._writer = threading.Lock()

    def run(self, work: Write[T]) -> T:
        """Run ``work`` in a transaction (maybe shared); return its result once committed."""
        own = _Pending(work)
        with self._queue_lock:
            self._queue.append(own)
        with self._writer:
            if not own.done:  # nobody took it along: lead a transaction for all that wait
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch, own)
        if own.error is not None:
            raise own.error
        return own.result

    def exclusive(self):
        """Hold the writer: no write runs until the ``with`` block ends."""
        return self._writer

    def _commit(self, batch: list[_Pending], own: _Pending) -> None:
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
                self._commit([pending], own)
            return
        except BaseException:
            # This thread is being interrupted (time limit, shutdown): the others' writes go
            # back to the queue for the next thread that takes the writer.
            with self._queue_lock:
                self._queue[:0] = [pending for pending in batch if pending is not own]
            raise
        for pending, result in zip(batch, results):
            pending.result, pending.done = result, True
