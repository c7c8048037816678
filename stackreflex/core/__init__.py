"""What every layer shares and nothing in it depends on: envelopes and their signatures, topic
patterns, the handler registry, run statuses and records, settings, errors, the clock,
redaction and logging. It imports no other stackreflex package."""
