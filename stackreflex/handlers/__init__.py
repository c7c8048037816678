"""Handlers: the reactions, written like runbooks, plus the registry and run context they use."""
