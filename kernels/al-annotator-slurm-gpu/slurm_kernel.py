#!/usr/bin/env python3
"""Run an IPython kernel on a SLURM GPU node for a JupyterLab that runs here (hub or login node).

Jupyter starts this script as the kernel process (see ``kernel.json``)::

    python slurm_kernel.py CONNECTION_FILE -- srun --gres=gpu:1 [more srun options]

1. It reads the connection file Jupyter wrote (the five ports on this host and the HMAC key).
2. It runs ``srun ... PYTHON -c <remote part>``: on the GPU node the remote part picks five free
   ports there, writes a node-local connection file (same key, listening on all interfaces) and
   prints one line ``AL_KERNEL_READY {"host": ..., "ports": {...}}`` before exec'ing
   ``python -m ipykernel_launcher``.
3. Meanwhile it listens on Jupyter's five ports (127.0.0.1 here) and relays every connection to the
   same channel on the node once the node is known. ZeroMQ reconnects by itself, so Jupyter simply
   sees a kernel that takes as long to start as the job waits in the queue.

Nothing needs to be shared between the two hosts but the Python environment (same path on both:
``AL_ANNOTATOR_REMOTE_PYTHON`` overrides it) and, for al_annotator, the project directory. The
messages stay signed with the connection file's key; they are not encrypted, as with any TCP kernel.
Interrupts go over the control channel (``"interrupt_mode": "message"`` in kernel.json). When
Jupyter stops the kernel, srun and with it the job step end; SIGTERM/SIGINT/SIGHUP here are passed
on to srun.

SLURM variables of an enclosing job (a JupyterHub spawned by batchspawner runs inside one) are
removed from srun's environment, so the kernel gets a GPU job of its own rather than a step of the
hub's allocation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys

READY = "AL_KERNEL_READY"
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
CONNECT_RETRY_S = 30.0

# Runs on the GPU node: free ports there, a node-local connection file, then ipykernel.
REMOTE = r"""
import base64, json, os, socket, sys, tempfile
info = json.loads(base64.b64decode(sys.argv[1]))
socks = []
for name in %(channels)r:
    s = socket.socket(); s.bind(("", 0)); socks.append(s); info[name] = s.getsockname()[1]
for s in socks:
    s.close()
info["ip"] = "0.0.0.0"
fd, path = tempfile.mkstemp(prefix="al-annotator-kernel-", suffix=".json")
with os.fdopen(fd, "w") as f:
    json.dump(info, f)
host = socket.getfqdn() or socket.gethostname()
print(%(ready)r, json.dumps({"host": host, "hostname": socket.gethostname(),
      "ports": {k: info[k] for k in %(channels)r}, "connection_file": path}), flush=True)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", path])
""" % {"channels": CHANNELS, "ready": READY}


def log(msg: str) -> None:
    print(f"[al-annotator slurm kernel] {msg}", file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """This environment without the SLURM job variables of an enclosing allocation."""
    keep = {"SLURM_CONF"}
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k in keep}


def remote_command(srun: list[str], info: dict, python: str) -> list[str]:
    payload = base64.b64encode(json.dumps(info).encode()).decode()
    srun = list(srun) or ["srun", "--gres=gpu:1"]
    if "--unbuffered" not in srun and "-u" not in srun:
        srun.insert(1, "--unbuffered")
    return [*srun, python, "-c", REMOTE, payload]


class Relay:
    """Local listeners on Jupyter's ports, relayed to the kernel's ports on the node."""

    def __init__(self, info: dict) -> None:
        self.local_ip = info.get("ip") or "127.0.0.1"
        self.local_ports = {name: int(info[name]) for name in CHANNELS}
        self.remote: dict | None = None
        self.ready = asyncio.Event()
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        for name, port in self.local_ports.items():
            handler = self._handler(name)
            self.servers.append(await asyncio.start_server(handler, self.local_ip, port))

    def set_remote(self, remote: dict) -> None:
        self.remote = remote
        self.ready.set()

    def _handler(self, name: str):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.ready.wait()
            assert self.remote is not None
            port = int(self.remote["ports"][name])
            deadline = asyncio.get_running_loop().time() + CONNECT_RETRY_S
            up_reader = up_writer = None
            while up_writer is None:
                for host in dict.fromkeys([self.remote["host"], self.remote.get("hostname", "")]):
                    if not host:
                        continue
                    try:
                        up_reader, up_writer = await asyncio.open_connection(host, port)
                        break
                    except OSError:
                        continue
                if up_writer is None:
                    if asyncio.get_running_loop().time() > deadline:
                        log(f"cannot reach {self.remote['host']}:{port} ({name}); closing that connection")
                        writer.close()
                        return
                    await asyncio.sleep(0.2)
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        return handle


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def run(connection_file: str, srun: list[str]) -> int:
    with open(connection_file) as f:
        info = json.load(f)
    python = os.environ.get("AL_ANNOTATOR_REMOTE_PYTHON") or sys.executable
    relay = Relay(info)
    await relay.start()
    cmd = remote_command(srun, info, python)
    log("starting: " + " ".join(cmd[: len(cmd) - 2]) + " <kernel bootstrap>")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, env=clean_env(), start_new_session=False)

    loop = asyncio.get_running_loop()

    def forward(signum: int) -> None:
        if proc.returncode is None:
            proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, forward, signum)

    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace")
        if relay.remote is None and line.startswith(READY):
            remote = json.loads(line[len(READY):])
            relay.set_remote(remote)
            log(f"kernel on {remote['host']} (ports {remote['ports']})")
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    rc = await proc.wait()
    for server in relay.servers:
        server.close()
    if relay.remote is None:
        log(f"srun ended ({rc}) before the kernel started: see the messages above")
    return rc


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    connection_file, rest = argv[0], argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    return asyncio.run(run(connection_file, rest))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
