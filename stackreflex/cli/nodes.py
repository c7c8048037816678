"""``stackreflex nodes``: the SSH side of the nodes: trusting their host keys explicitly."""

from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import StackreflexError
from ..tasks.inventory import Host
from ..tasks.ssh import trust_host
from .common import emit, invocation
from .output import Column, Listing, lists

COLUMNS = [Column("node"), Column("key"), Column("fingerprint"), Column("recorded", "text")]

app = typer.Typer(help="Pre-provisioned nodes: record their SSH host keys.", no_args_is_help=True)


@app.command()
@lists
def trust(
    hosts: Annotated[list[str], typer.Argument(help="Nodes to trust: ADDRESS or ADDRESS:PORT.")],
    known_hosts: Annotated[
        Path | None, typer.Option(help="known_hosts file (default: the ssh_known_hosts setting).")
    ] = None,
) -> None:
    """Record the host key each node presents now (replacing a changed one): an explicit act,
    after checking the fingerprints shown against the nodes' consoles.

    With --known-hosts, an operator records trust for another account, such as the service's
    /etc/stackreflex/known_hosts; an existing file keeps its owner and mode."""
    settings = invocation.settings
    path = (known_hosts or settings.ssh_known_hosts).expanduser()
    _check_writable(path)  # before asking any node: a wrong path is one line, not a traceback
    rows = []
    for text in hosts:
        host = Host.parse(text)
        try:
            kind, fingerprint, outcome = trust_host(settings, host.address, host.port, path)
        except OSError as exc:
            raise StackreflexError(f"cannot write {path}: {exc.strerror or exc}") from None
        rows.append({"node": str(host), "key": kind, "fingerprint": fingerprint, "recorded": outcome})
    emit(Listing(COLUMNS, rows, title=f"known_hosts: {path}"))


def _check_writable(path: Path) -> None:
    """The known_hosts file can be written (its directory is made, the file created empty if new)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as exc:
        raise StackreflexError(f"cannot write {path}: {exc.strerror or exc}") from None
