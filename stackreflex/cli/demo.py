"""``stackreflex demo``: the runtime at work in one process, with nothing to set up."""

import hashlib
import tempfile
import threading
import time
from pathlib import Path

from rich.live import Live

from ..bus.envelope import Envelope
from ..bus.follow import Follower
from ..bus.publisher import Publisher
from ..handlers.registry import load_handlers
from ..models.queries import RunFilter, list_envelopes, list_runs
from ..runtime import Runtime
from .common import console, invocation, styled, table
from .publish import progress_table

#: How long after the wait starts the awaited file is written (seconds).
FILE_APPEARS_AFTER = 1.5


def demo() -> None:
    """Run example runbooks on the embedded runtime and print what the audit log recorded.

    It publishes envelopes on the in-memory bus: a checksum of three files (steps and
    progress), a wait for a file that appears later (a continuation: no message is held
    while waiting), a checksum that does not match (a failed run with its reason), and a
    malformed message (rejected with its reason). Nothing to install or configure.
    """
    invocation.overrides.setdefault("log_level", "WARNING")  # the tables tell the story
    settings = invocation.settings.model_copy(update={"broker_url": None})
    load_handlers("stackreflex.handlers.examples")
    workdir = Path(tempfile.mkdtemp(prefix="stackreflex-demo-"))
    images = []
    for name, size in (("cirros.qcow2", 300_000), ("rhel9.qcow2", 2_000_000), ("fedora.raw", 1_000_000)):
        path = workdir / name
        path.write_bytes(hashlib.sha256(name.encode()).digest() * (size // 32))
        images.append(str(path))
    upload = workdir / "upload.done"

    correlations = []
    with Runtime(settings) as runtime, Follower(settings) as follower:
        publisher = Publisher(settings)

        def run(title: str, envelope: Envelope) -> None:
            console.rule(title)
            correlations.append(envelope.correlationid)
            publisher.publish(envelope)
            with Live(console=console, refresh_per_second=8) as live:
                follower.follow(envelope, timeout=60, on_update=lambda p: live.update(progress_table(p)))

        run("1. verify image checksums", Envelope.new(
            "command.demo.checksum", subject="images", data={"paths": images}))
        threading.Timer(FILE_APPEARS_AFTER, upload.write_text, args=("done\n",)).start()
        run("2. wait for an upload to finish (a continuation)", Envelope.new(
            "command.demo.await-file", subject="upload", data={"path": str(upload), "every": 0.3}))
        run("3. a checksum that does not match (the run fails, with its reason)", Envelope.new(
            "command.demo.checksum", subject="images",
            data={"paths": images[:1], "expected": {images[0]: "0" * 64}}))
        console.rule("4. a malformed message (rejected with its reason, the router keeps going)")
        publisher.publish_raw(b'{"specversion": "1.0", "data": {"password": "hunter2"}}', "command.demo.checksum")
        time.sleep(0.5)
        publisher.close()

    found = [r for c in correlations for r in list_runs(runtime.audit, RunFilter(correlation_id=c))]
    console.rule("the audit log")
    console.print(table("runs", ["run", "handler", "status", "invocations", "seconds", "error / last progress"],
                        [(r["id"][:8], r["handler"], styled(r["status"]), r["attempts"], r["duration_s"],
                          (r["error"] or (r["progress"] or {}).get("note") or "").replace(str(workdir) + "/", ""))
                         for r in found]))
    for rejected in list_envelopes(runtime.audit, status="rejected", limit=1):
        console.print(f"rejected envelope: [red]{rejected['reason']}[/] "
                      f"(kept for the post-mortem, redacted: {rejected['payload']})")
    console.print(f"\naudit log: {settings.database()}\n"
                  "next: `stackreflex audit runs`, `stackreflex audit show RUN`")
