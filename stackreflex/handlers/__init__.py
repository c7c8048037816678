"""Handlers: the reactions, written like runbooks, and the run context they act through (the
registry they are declared in is :mod:`stackreflex.core.registry`)."""
