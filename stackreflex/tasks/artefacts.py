"""Backup artefacts: streamed from a node over SFTP straight into the destination, hashed on the way,
checked against the node's own SHA-256 and by reading them back, then named for good.

An artefact is written as ``NAME.partial`` and renamed only once verified, so a file without the
suffix is always a whole, checked copy; a name already taken is never overwritten.
"""

import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paramiko

from ..core.errors import StackreflexError
from . import ssh as remote

PARTIAL = ".partial"


class ArtefactError(StackreflexError):
    """An artefact could not be fetched, or what arrived is not what the node holds."""


@dataclass(frozen=True)
class Artefact:
    """One verified file of a backup."""

    file: str
    node: str
    source: str
    size: int
    sha256: str
    #: How it was checked once here (e.g. "tar lists 1234 members", "dump completed").
    verified: str


class _Hashing:
    """A file that hashes what is written to it (paramiko's getfo writes chunk by chunk)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)


def free_name(dest: Path, name: str) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``… before its suffixes, whichever is free in ``dest``
    (a file of an earlier backup is never overwritten)."""
    stem, dot, suffixes = name.partition(".")
    candidate, n = name, 1
    while (dest / candidate).exists() or (dest / (candidate + PARTIAL)).exists():
        n += 1
        candidate = f"{stem}-{n}{dot}{suffixes}"
    return candidate


def fetch(ssh: paramiko.SSHClient, source: str, dest: Path, name: str, *, node: str, sudo: bool) -> Artefact:
    """Stream ``source`` from the node into ``dest/name`` (via ``name.partial``) and verify it."""
    partial = dest / (name + PARTIAL)
    try:
        # a backup holds the cloud's secrets (dumps, hieradata in /etc): only its owner reads it
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            hashing = _Hashing(out)
            with ssh.open_sftp() as sftp:
                sftp.getfo(source, hashing)  # type: ignore[arg-type]  # getfo only writes; its stub asks for a whole IO[bytes]
            out.flush()
            os.fsync(out.fileno())
    except FileExistsError:
        raise ArtefactError(f"{partial} already exists: another backup is writing it") from None
    except (OSError, paramiko.SSHException) as exc:
        partial.unlink(missing_ok=True)
        raise ArtefactError(f"node {node}: cannot fetch {source} over SFTP: {exc}") from None
    try:
        _, sums, _ = remote.run(ssh, f"sha256sum {source}", sudo=sudo, host=node)
        theirs = sums.split()[0] if sums.split() else ""
        mine = hashing.digest.hexdigest()
        if theirs != mine:
            raise ArtefactError(f"{name}: SHA-256 {mine} here but {theirs or 'none'} on {node}: the copy is damaged")
        verified = verify(partial, name)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    final = dest / name
    if final.exists():
        partial.unlink(missing_ok=True)
        raise ArtefactError(f"{final} appeared meanwhile: not overwriting it")
    partial.rename(final)
    return Artefact(name, node, source, hashing.size, mine, verified)


def verify(path: Path, name: str) -> str:
    """Read the fetched file back as what it claims to be; returns how it was checked."""
    try:
        if ".tar" in name:
            with tarfile.open(path, "r:*") as archive:
                members = sum(1 for _ in archive)
            if not members:
                raise ArtefactError(f"{name}: the archive is empty")
            return f"tar lists {members} members"
        if name.endswith(".sql"):
            tail = _tail(path)
            if name.startswith("openstack_databases_grants"):
                lines = [line for line in tail.splitlines() if line.strip()]
                if lines and not all(line.endswith(";") for line in lines):
                    raise ArtefactError(f"{name}: a grant line does not end with ';'")
                return "grants end with ';'"
            last = tail.strip().splitlines()[-1:]
            if not last or "-- Dump completed" not in last[0]:
                raise ArtefactError(f"{name}: the dump's last line does not say it completed: it was cut short")
            return "dump completed"
        if name.endswith(".rdb"):
            with path.open("rb") as f:
                if not f.read(5) == b"REDIS":
                    raise ArtefactError(f"{name}: not a Redis RDB file")
            return "RDB header"
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise ArtefactError(f"{name}: cannot be read back: {exc}") from None
    return "size and SHA-256"


def _tail(path: Path, size: int = 4096) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode(errors="replace")


def discard_partials(dest: Path, names: list[str]) -> list[str]:
    """Remove what a failed or cancelled backup left half-written; returns what was removed."""
    removed = []
    for name in names:
        partial = dest / (name + PARTIAL)
        if partial.exists():
            partial.unlink()
            removed.append(partial.name)
    return removed


def write_manifest(dest: Path, name: str, manifest: dict[str, Any]) -> Path:
    """The backup's manifest beside its files (written whole, then renamed, like the artefacts)."""
    path = dest / name
    partial = dest / (name + PARTIAL)
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
    return path
