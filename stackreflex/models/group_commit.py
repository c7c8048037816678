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


def _held(connection: Connection) -> None:
    """What :meth:`GroupCommit.exclusive` queues as its turn (it is taken out, never run)."""


class _Pending:
    """One caller's write, and the lock it sleeps on until its write is committed or it is
    asked to lead the next transaction (held from birth; released once, by whoever wakes it)."""

    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Write[Any]):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Runs writes in shared transactions opened by ``transaction()``.

    Each waiting caller sleeps on a lock of its own, and is woken exactly once: when its write
    is committed, or when it is its turn to lead. (Sleeping on one shared condition, every
    commit woke every waiting thread to find, mostly, that it had to sleep again: some thirty
    thread switches for each event.)
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]):
        self._transaction = transaction
        #: writes waiting for the next transaction (not those of the one under way)
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
        self._take_turn(own)
        if not own.done:  # leading: a transaction for every write that waits
            with self._mutex:
                batch, self._queue = self._queue, []
            try:
                self._commit(batch)
            except BaseException:
                # This thread is being interrupted (time limit, shutdown): the others' writes go
                # back to the queue for the next thread that leads.
                with self._mutex:
                    self._queue[:0] = [pending for pending in batch if pending is not own and not pending.done]
                raise
            finally:
                self._hand_over(batch, own)
        AUDIT_WRITE_DURATION.observe(time.perf_counter() - called)
        if own.error is not None:
            raise own.error
        return cast(T, own.result)  # what ``work`` returned

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer: no write runs until the ``with`` block ends."""
        own = _Pending(_held)  # a place in the queue, never committed
        self._take_turn(own)
        with self._mutex:
            if own in self._queue:
                self._queue.remove(own)  # the writes behind it wait for the next turn
        try:
            yield
        finally:
            self._hand_over([], own)

    def _take_turn(self, own: _Pending) -> None:
        """Queue ``own``; return once it is committed (``own.done``) or it is its turn to lead."""
        with self._mutex:
            self._queue.append(own)
            if not self._leading:
                self._leading = True
                return
        own.wake.acquire()

    def _hand_over(self, batch: list[_Pending], leader: _Pending) -> None:
        """Wake the callers whose writes were committed, and the first still waiting to lead."""
        with self._mutex:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._leading = False
        for pending in batch:
            if pending is not leader and pending.done:
                pending.wake.release()
        if following is not None:
            following.wake.release()

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
