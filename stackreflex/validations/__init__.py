"""Pre-upgrade validations: named checks (data), grouped, run by the ``run_validations`` handler."""

from .registry import Check, Checks, Limits, Seen, Verdict, load_checks

__all__ = ["Check", "Checks", "Limits", "Seen", "Verdict", "load_checks"]
