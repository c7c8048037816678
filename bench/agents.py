"""Benchmark: configuring os-collect-config on N simulated nodes, until Heat says they are configured.

    .venv/bin/python bench/agents.py [--nodes 50 200] [--rounds 3]

A node is configured once Heat's software deployments for it are complete (the agent fetched,
ran them and signalled back), so every figure here runs to that point. For each N: a serial,
one-node-at-a-time run over the same SSH path (what the old shell script did), followed by the
same wait for every node's deployments; stackreflex's `agents configure` with its default
settings on the embedded runtime; and the ideal (one node's configuration time x
ceil(N / concurrency), plus the serial run's wait for the deployments after its last node).
Agents poll every second in both runs. Goal (issue #4): at 200 nodes at least 10x faster than
serial and within 1.5x of the ideal. Each measurement gets a fresh simulated overcloud (its own
process, as nodes are other machines), so no run finds nodes already configured. Each figure
is the median of --rounds (range beside it); CPU is this process's whole CPU time during
stackreflex's run (runtime, handlers, audit log, SSH clients), per node, nothing subtracted.
With STACKREFLEX_BROKER_URL set the runtime uses that RabbitMQ (its queues removed afterwards);
otherwise it is embedded.
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
import yaml
from brokers import remove_namespace
from simprocess import SimProcess, print_table

from stackreflex.core.envelope import Envelope
from stackreflex.core.logs import setup_logging
from stackreflex.core.registry import Registry, load_handlers
from stackreflex.core.settings import Settings
from stackreflex.models.queries import RunFilter, list_runs
from stackreflex.runtime import Runtime
from stackreflex.tasks.agents import AgentLayout, configure_agent
from stackreflex.tasks.cloud import connect_cloud
from stackreflex.tasks.heat import agent_source, deployed_servers, deployments_of
from stackreflex.tasks.ssh import open_ssh, trust_host


def deployed_server_sim(n: int, work: Path, public_key: Path) -> SimProcess:
    """N pre-provisioned compute nodes, deployed at once."""
    hosts = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]
    sim = SimProcess(
        {"deployment_time": 0.0, "compute_hosts": {}, "roles": {"ComputeDeployedServer": {"count": n, "hosts": hosts}}},
        work,
        public_key,
    )
    sim.hosts = hosts
    return sim


def settings_for(sim: SimProcess, work: Path, key_file: Path, **overrides) -> Settings:
    inventory = work / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump({"roles": {"ComputeDeployedServer": [f"{h}:{sim.nodes[h]}" for h in sim.hosts]}})
    )
    os.environ.update(sim.environment)
    settings = Settings(
        database_url=f"sqlite:///{work}/audit-{time.monotonic_ns()}.db",
        inventory=inventory,
        ssh_key_file=key_file,
        ssh_known_hosts=work / "known_hosts",
        log_level="WARNING",
        broker_url=os.environ.get("STACKREFLEX_BROKER_URL"),
        namespace=f"bench-agents-{os.getpid()}-{time.monotonic_ns()}",
        **overrides,
    )
    for address, port in sim.nodes.items():
        trust_host(settings, address, port)
    return settings


#: Longest a configuration run of the benchmark may take before it is reported as stuck (seconds).
RUN_TIMEOUT = 600.0
#: How often agents poll in both runs, and the serial run looks at Heat (seconds).
POLL = 1


def serial(sim: SimProcess, settings: Settings) -> tuple[float, float]:
    """The old script: one node after the other, same task, same SSH path; then Heat watched
    until every node's deployments completed. (total seconds, of which the wait after the last node)."""
    conn = connect_cloud(settings)
    layout = AgentLayout.from_settings(settings)
    started = time.perf_counter()
    servers = deployed_servers(conn, "overcloud")
    for server in servers:
        address = sim.hosts[server.index]
        with open_ssh(settings, address, port=sim.nodes[address]) as ssh:
            configure_agent(ssh, agent_source(conn, server), layout, host=address)
    configured = time.perf_counter()
    pending = list(servers)
    while pending:
        pending = [s for s in pending if not deployments_of(conn, s).settled]
        if time.perf_counter() - started > RUN_TIMEOUT:
            raise RuntimeError(f"not done after {RUN_TIMEOUT:.0f}s: {len(pending)} nodes' deployments pending")
        if pending:
            time.sleep(POLL)
    done = time.perf_counter()
    return done - started, done - configured


def ours(settings: Settings, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `agents configure` on ``n`` nodes."""
    registry = Registry()
    load_handlers("stackreflex.handlers.deployed_servers", registry)
    try:
        with Runtime(settings, registry) as runtime:
            envelope = Envelope.new("command.agents.configure", subject="overcloud", data={"stack": "overcloud"})
            cpu, started = time.process_time(), time.perf_counter()
            runtime.bus.publish(envelope)
            while True:
                runs = list_runs(runtime.audit, RunFilter(handler="configure_node_command", limit=n + 1))
                if len(runs) == n and all(r["status"] in ("succeeded", "failed", "dead") for r in runs):
                    break
                if time.perf_counter() - started > RUN_TIMEOUT:
                    stuck = [
                        f"{r['subject']} {r['status']} {r['waiting_for'] or r['error'] or ''}"
                        for r in runs
                        if r["status"] != "succeeded"
                    ]
                    raise RuntimeError(f"not done after {RUN_TIMEOUT:.0f}s: {len(runs)} runs, stuck: {stuck[:3]}")
                time.sleep(0.1)
            elapsed, used = time.perf_counter() - started, time.process_time() - cpu
            failed = [r for r in runs if r["status"] != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} node(s) failed: {failed[0]['error']}")
    finally:
        remove_namespace(settings.broker_url, settings.namespace, [h.name for h in registry])
    return elapsed, used


def spread(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):.1f}{unit} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="worker threads and node window (default: the settings' defaults)")
    args = parser.parse_args()
    setup_logging("text", "WARNING")
    overrides = {"worker_threads": args.threads, "agent_concurrency": args.threads} if args.threads else {}
    overrides["agent_polling_interval"] = POLL
    defaults = Settings(**overrides)
    concurrency = min(defaults.agent_concurrency, defaults.worker_threads)
    rows = []
    for n in args.nodes:
        serials, ideals, walls, cpus = [], [], [], []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                key = paramiko.ECDSAKey.generate()
                key.write_private_key_file(str(work / "id_ecdsa"))
                public = work / "id_ecdsa.pub"
                public.write_text(f"{key.get_name()} {key.get_base64()}\n")
                sim = deployed_server_sim(n, work, public)
                try:
                    serial_s, tail_s = serial(
                        sim, settings_for(sim, work, work / "id_ecdsa", agent_polling_interval=POLL)
                    )
                finally:
                    sim.stop()
                sim = deployed_server_sim(n, work, public)
                try:
                    wall, cpu = ours(settings_for(sim, work, work / "id_ecdsa", **overrides), n)
                finally:
                    sim.stop()
            serials.append(serial_s)
            ideals.append((serial_s - tail_s) / n * math.ceil(n / concurrency) + tail_s)
            walls.append(wall)
            cpus.append(cpu / n * 1000)
            print(
                f"{n} nodes, round {r + 1}: serial {serial_s:.1f} s, ideal {ideals[-1]:.1f} s, stackreflex "
                f"{wall:.1f} s ({cpus[-1]:.0f} ms CPU per node)",
                file=sys.stderr,
            )
        rows.append(
            (
                n,
                spread(serials),
                spread(walls),
                spread(ideals),
                spread([s / w for s, w in zip(serials, walls, strict=False)], "x"),
                spread([w / i for w, i in zip(walls, ideals, strict=False)], "x"),
                spread(cpus),
            )
        )
    broker = "on RabbitMQ" if defaults.broker_url or os.environ.get("STACKREFLEX_BROKER_URL") else "embedded"
    print(
        f"\nconcurrency: {defaults.agent_concurrency}-node window on {defaults.worker_threads} worker threads "
        f"(effective {concurrency}), runtime {broker}; ideal = one node's serial time x ceil(N / {concurrency}) "
        f"+ the serial run's wait for Heat after its last node; agents poll every {POLL} s; median of "
        f"{args.rounds} rounds (range); load average {os.getloadavg()[0]:.2f}\n"
    )
    header = ("nodes", "serial s", "stackreflex s", "ideal s", "speed-up vs serial", "vs ideal", "CPU ms/node")
    print_table(header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
