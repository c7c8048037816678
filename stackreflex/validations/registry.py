"""Validations as data: a named check says where it runs, what it runs, and how its answer is judged.

Grouped the way tripleo-validations groups its playbooks (``pre-upgrade``, ``post-deployment``…),
so ``stackreflex validate overcloud --group pre-upgrade`` runs every check of that group. Users add
their own from a module or file holding :class:`Check` objects (setting ``validations``, or
``--checks`` on the command line), as handlers are added with ``--handlers``:

>>> ntp_sources = Check("chrony-sources", "at least one NTP source is reachable", target="overcloud",
...                     where="each-node", command="chronyc -n sources",
...                     judge=lambda seen, limits: Verdict.passed(seen.stdout.count("^*"), "≥ 1"))
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..core.errors import StackreflexError
from ..core.registry import import_spec

if TYPE_CHECKING:
    from openstack.connection import Connection

Target = Literal["undercloud", "overcloud"]
#: Where a check runs: over SSH on the undercloud, on every overcloud node, on every controller,
#: on one controller (cluster-wide state), or against the cloud's APIs.
Where = Literal["undercloud-node", "each-node", "each-controller", "one-controller", "api"]
VERDICTS = ("pass", "warn", "fail", "skipped")


class ValidationError(StackreflexError):
    """A check is malformed, unknown, or its file cannot be loaded."""


@dataclass(frozen=True)
class Verdict:
    """What a check concluded: its verdict, the value it saw, the threshold it held it to, and a
    one-line reason an operator can act on (empty when it passed)."""

    verdict: str
    seen: str = ""
    threshold: str = ""
    reason: str = ""

    @classmethod
    def passed(cls, seen: Any, threshold: str = "", reason: str = "") -> "Verdict":
        return cls("pass", str(seen), threshold, reason)

    @classmethod
    def warning(cls, seen: Any, threshold: str, reason: str) -> "Verdict":
        return cls("warn", str(seen), threshold, reason)

    @classmethod
    def failed(cls, seen: Any, threshold: str, reason: str) -> "Verdict":
        return cls("fail", str(seen), threshold, reason)

    @classmethod
    def skipped(cls, reason: str) -> "Verdict":
        return cls("skipped", "", "", reason)


@dataclass(frozen=True)
class Seen:
    """What a check's command answered on one node (or what its API query returned)."""

    node: str
    #: The node's role (its TripleO role name; ``undercloud`` for the undercloud).
    role: str = ""
    #: The command line that answered (of a check's alternatives, the first the node has).
    command: str = ""
    status: int = 0
    stdout: str = ""
    stderr: str = ""
    #: An API check's answer (a list of openstacksdk resources…).
    answer: Any = None

    @property
    def missing_tool(self) -> bool:
        """The command does not exist there (a node without Ceph, a controller without Pacemaker):
        the shell's 127, or sudo's own "command not found" (it exits 1)."""
        return self.status == 127 or (self.status == 1 and "command not found" in self.stderr)


@dataclass(frozen=True)
class Limits:
    """The thresholds checks are held to (from settings)."""

    min_free_percent: float = 10.0
    osd_max_used_percent: float = 80.0
    controllers: int = 0


#: judge(seen, limits) -> Verdict; an ``across`` check's judge gets every node's Seen at once
#: and returns {node: Verdict}.
Judge = Callable[[Seen, Limits], Verdict]


@dataclass(frozen=True)
class Check:
    name: str
    #: What it verifies, in one line.
    description: str
    target: Target
    where: Where
    judge: Callable[[Any, Limits], Any] = field(repr=False)
    #: The command line it runs (node checks), as root when settings say sudo; a tuple is tried in
    #: order while a command fails (chronyc, whose daemon may not run, else ntpstat).
    command: str | tuple[str, ...] | None = None
    #: An API check's query: query(connection, stack) -> answer (API checks).
    query: "Callable[[Connection, str], Any] | None" = field(default=None, repr=False)
    groups: tuple[str, ...] = ("pre-upgrade",)
    #: The judge sees every node's answer together (e.g. versions compared across a role).
    across: bool = False
    #: Where the runbook asks for it (e.g. "001 §2.12").
    source: str = ""
    #: Whose API an ``api`` check asks (default: the target's; Heat's stacks are the undercloud's).
    cloud: Target | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValidationError(f"check name {self.name!r}: letters, digits, '-', '_' or '.'")
        if (self.where == "api") != (self.query is not None) or (self.where != "api") != bool(self.command):
            raise ValidationError(
                f"check {self.name}: an 'api' check has a query and no command; any other has a command"
            )

    @property
    def on_nodes(self) -> bool:
        return self.where != "api"

    @property
    def commands(self) -> tuple[str, ...]:
        return (self.command,) if isinstance(self.command, str) else tuple(self.command or ())

    @property
    def api(self) -> Target:
        return self.cloud or self.target


class Checks:
    """The checks a process knows, by name."""

    def __init__(self, checks: Iterable[Check] = ()) -> None:
        self._checks: dict[str, Check] = {}
        for check in checks:
            self.add(check)

    def add(self, check: Check) -> None:
        if check.name in self._checks and self._checks[check.name] is not check:
            raise ValidationError(f"check name {check.name!r} is defined twice")
        self._checks[check.name] = check

    def __iter__(self) -> Iterator[Check]:
        return iter(self._checks.values())

    def __len__(self) -> int:
        return len(self._checks)

    def names(self) -> list[str]:
        return list(self._checks)

    def select(self, target: Target, group: str | None = None, only: Iterable[str] = ()) -> list[Check]:
        """The checks of ``target`` in ``group`` (any group when None), or those named in ``only``;
        a name this process does not know is an error naming the ones it does."""
        only = list(only)
        unknown = [n for n in only if n not in self._checks]
        if unknown:
            raise ValidationError(f"unknown check {', '.join(unknown)}; known: {', '.join(self.names())}")
        wrong = [n for n in only if self._checks[n].target != target]
        if wrong:
            raise ValidationError(f"{', '.join(wrong)}: not {target} check(s)")
        return [
            c for c in self if c.target == target and (c.name in only if only else group is None or group in c.groups)
        ]


BUILTIN = "stackreflex.validations.builtin"


def load_checks(extra: Iterable[str] = ()) -> Checks:
    """The built-in checks and those of ``extra`` (modules ``pkg.mod`` or files ``path.py``)."""
    checks = Checks()
    for spec in [BUILTIN, *extra]:
        for value in vars(import_spec(spec, "checks", ValidationError)).values():
            if isinstance(value, Check):
                checks.add(value)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Check) for v in value):
                for check in value:
                    checks.add(check)
    return checks
