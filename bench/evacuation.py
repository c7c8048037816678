"""Benchmark: evacuating a compute host of 60 servers with --max-parallel 1, 3 and 6.

    .venv/bin/python bench/evacuation.py [--servers 60] [--seconds 2] [--parallel 1 3 6] [--rounds 3]

Each live migration takes T seconds in the simulated Nova (its own process; Nova's per-host
limit lifted so the window is the orchestrator's), so the ideal total is ceil(servers / N) x T.
Orchestration CPU is this process's whole CPU time during the evacuation (the handler, the
runtime with its idle loops, the audit log; the simulator is elsewhere), per migration, less
the main thread's: it only publishes the command and looks at the run, as an operator's CLI
would from a process of its own. What the idle runtime burns per second is printed beside it,
for information, never subtracted.
Each figure is the median of --rounds, with its range.
Goals (issues #5, #19): within 10% of the ideal; at window 1 at most 20 ms of CPU per migration.
With STACKREFLEX_BROKER_URL set the runtime uses that RabbitMQ (its queues are removed
afterwards); otherwise it is embedded.
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paramiko
from brokers import remove_namespace
from simprocess import SimProcess, print_table

from stackreflex.core.envelope import Envelope
from stackreflex.core.logs import setup_logging
from stackreflex.core.records import FINAL_STATUSES
from stackreflex.core.registry import Registry, load_handlers
from stackreflex.core.settings import Settings
from stackreflex.runtime import Runtime

SOURCE = "compute-src.localdomain"
#: Seconds between the benchmark's looks at the run.
LOOK_INTERVAL = 0.1
#: Longest one evacuation of the benchmark may take before it is reported as stuck (seconds).
RUN_TIMEOUT = 1800.0
#: What both rounds serve: the evacuation handler, loaded once.
HANDLERS = Registry()


def evacuate(settings: Settings, servers: int, seconds: float, parallel: int, work: Path, public: Path):
    """(wall seconds, CPU seconds of this process) for one evacuation on a fresh simulator."""
    sim = SimProcess(
        {
            "compute_hosts": {SOURCE: servers, "compute-dst1.localdomain": 0, "compute-dst2.localdomain": 0},
            "live_migration_time": seconds,
            "max_concurrent_live_migrations": 0,
            "roles": {},
        },
        work,
        public,
    )
    try:
        os.environ.update(sim.environment)
        with Runtime(settings, HANDLERS) as runtime:
            envelope = Envelope.new(
                "command.host.evacuate", subject=SOURCE, data={"host": SOURCE, "max_parallel": parallel}
            )
            cpu, started = runtime_cpu(), time.perf_counter()
            runtime.bus.publish(envelope)
            while (run := look(runtime, envelope)) is None or run.status not in FINAL_STATUSES:
                if time.perf_counter() - started > RUN_TIMEOUT:
                    raise RuntimeError(f"evacuation not done after {RUN_TIMEOUT:.0f}s: {run}")
            wall, used = time.perf_counter() - started, runtime_cpu() - cpu
            if run.status != "succeeded":
                raise RuntimeError(f"evacuation {run.status}: {run.error}")
            return wall, used
    finally:
        sim.stop()


def runtime_cpu() -> float:
    """CPU seconds of this process but for the calling (main) thread: the runtime's threads."""
    return time.process_time() - time.thread_time()


def look(runtime: Runtime, envelope: Envelope):
    """The benchmark's own look at the run: one cheap query, done the same way when idle."""
    time.sleep(LOOK_INTERVAL)
    return runtime.audit.find_run(envelope.id, "evacuate_host")


def idle_cpu(settings: Settings, seconds: float) -> float:
    """CPU seconds the runtime uses doing nothing for ``seconds`` (looked at as during an evacuation)."""
    with Runtime(settings, HANDLERS) as runtime:
        nothing = Envelope.new("bench.idle")
        cpu = runtime_cpu()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            look(runtime, nothing)
        return runtime_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=2.0, help="T: one live migration's duration")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    setup_logging("text", "WARNING")
    load_handlers("stackreflex.handlers.host_maintenance", HANDLERS)
    rows = []
    broker = os.environ.get("STACKREFLEX_BROKER_URL")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = paramiko.ECDSAKey.generate()
        public = work / "id_ecdsa.pub"
        public.write_text(f"{key.get_name()} {key.get_base64()}\n")
        for n in args.parallel:
            walls, cpus, idles = [], [], []
            for r in range(args.rounds):
                namespace = f"bench-evacuation-{os.getpid()}-{n}-{r}"
                settings = Settings(
                    database_url=f"sqlite:///{work}/audit-{n}-{r}.db",
                    log_level="WARNING",
                    broker_url=broker,
                    namespace=namespace,
                )
                try:
                    wall, cpu = evacuate(settings, args.servers, args.seconds, n, work, public)
                    idles.append(idle_cpu(settings, 10.0) / 10.0)
                finally:
                    remove_namespace(broker, namespace, [h.name for h in HANDLERS])
                walls.append(wall)
                cpus.append(cpu / args.servers * 1000)
                print(f"window {n}, round {r + 1}: {wall:.1f} s, {cpus[-1]:.1f} ms CPU per migration", file=sys.stderr)
            ideal = math.ceil(args.servers / n) * args.seconds
            wall = statistics.median(walls)
            rows.append(
                (
                    n,
                    f"{ideal:.1f}",
                    f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})",
                    f"{(wall / ideal - 1) * 100:+.1f}%",
                    f"{statistics.median(cpus):.1f} ({min(cpus):.1f}-{max(cpus):.1f})",
                    f"{statistics.median(idles) * 1000:.1f}",
                )
            )
    print(
        f"\n{args.servers} servers, T = {args.seconds:g} s per live migration, runtime "
        f"{'on RabbitMQ' if broker else 'embedded'}; ideal = ceil({args.servers} / N) x T; median of "
        f"{args.rounds} rounds (range); load average {os.getloadavg()[0]:.2f}; goals: within 10% of ideal, "
        "<= 20 ms CPU per migration at window 1\n"
    )
    header = (
        "max-parallel N",
        "ideal s",
        "stackreflex s",
        "over ideal",
        "CPU ms/migration (runtime, total)",
        "idle runtime CPU ms/s",
    )
    print_table(header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
