"""The run lifecycle: one owner for how a handler's run is claimed, leased, retried, parked and
woken, cancelled, reconciled and finished.

A run is (envelope, handler). Each execution of its handler claims it under a lease of its
own; what the execution records is fenced by that lease. dramatiq carries the messages and
decides retries (:mod:`.middleware` hooks the lifecycle into its middleware, and its
``Retries`` asks :meth:`Lifecycle.may_retry`); the budget and every counter live in the run's
row, so they hold across wake-ups, workers and restarts. Nothing is orphaned: every process
serving handlers reconciles runs that no live message or lease accounts for.

Which handlers an envelope goes to is decided here too (:mod:`.subscribers`): those of every
live process on the bus, so a handler served anywhere gets its runs.
"""
