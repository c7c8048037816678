"""Rebooting a node over SSH, and knowing it really came back: its kernel boot id changes.

Uptime and reachability can both mislead (a reboot that never happened, a node that is
still shutting down); the boot id cannot.
"""

import paramiko

from ..core.settings import Settings
from .inventory import Host
from .ssh import SSHError, open_ssh, run

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id(ssh: paramiko.SSHClient, *, host: str = "") -> str:
    return run(ssh, f"cat {BOOT_ID}", host=host)[1].strip()


def boot_id_now(settings: Settings, node: Host) -> str | None:
    """The node's boot id, or None while it cannot be reached."""
    try:
        with open_ssh(settings, node.address, port=node.port) as ssh:
            return boot_id(ssh, host=str(node))
    except (SSHError, paramiko.SSHException, OSError, EOFError):
        return None


def reboot(ssh: paramiko.SSHClient, *, sudo: bool, host: str = "") -> None:
    """Ask the node to reboot; the connection may drop before the command answers."""
    try:
        run(ssh, "reboot", sudo=sudo, host=host)
    except (paramiko.SSHException, EOFError, OSError):
        pass
