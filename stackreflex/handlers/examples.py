"""Example handlers used by ``stackreflex demo``: small, real and local.

They show the shape every handler has (a decorator saying what it reacts to, steps,
progress, a continuation) without needing a cloud: checksumming files as one would
verify an image before copying it to an edge store, and waiting for a file to appear
as one waits for an upload.
"""

import hashlib
import os

from ..bus.envelope import Envelope
from .context import RunContext
from .registry import handler

#: Bytes read at a time when checksumming.
CHUNK = 1 << 20


def sha256_file(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@handler("command.demo.checksum", max_retries=1, min_backoff=0.2, max_backoff=1)
def verify_checksums(event: Envelope, ctx: RunContext) -> None:
    """Checksum every file in ``data.paths``; fail if one differs from ``data.expected``."""
    paths = event.data["paths"]
    expected = event.data.get("expected", {})
    for done, path in enumerate(paths, 1):
        with ctx.step("sha256", target=path) as detail:
            detail["sha256"], detail["bytes"] = sha256_file(path)
        if path in expected and expected[path] != detail["sha256"]:
            ctx.fail(f"{path}: sha256 {detail['sha256'][:12]}… differs from the expected {expected[path][:12]}…")
        ctx.progress(done, len(paths), os.path.basename(path))


@handler("command.demo.await-file", max_retries=1, min_backoff=0.2, max_backoff=1)
def await_file(event: Envelope, ctx: RunContext) -> None:
    """Wait, holding no message, until ``data.path`` exists; then record its size."""
    path = event.data["path"]
    if not os.path.exists(path):
        ctx.recheck(float(event.data.get("every", 0.5)), waiting_for=f"{path} to appear",
                    deadline=float(event.data.get("deadline", 60)))
    with ctx.step("file appeared", target=path) as detail:
        detail["bytes"] = os.path.getsize(path)
