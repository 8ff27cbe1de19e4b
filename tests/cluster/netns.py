"""A test network of hosts made of Linux network namespaces, joined by veth pairs to one bridge.

::

    host namespaces, one per host                    the switch namespace
    pyrodist-<run>-ns      eth0 10.213.X.11 ──veth── vns ─────┐
    pyrodist-<run>-master  eth0 10.213.X.12 ──veth── vmaster ─┼── bridge pdbr<run>
    pyrodist-<run>-w1      eth0 10.213.X.13 ──veth── vw1 ─────┘
    ...

Nothing is created in the root namespace: every veth is created directly between its host's namespace
and the switch namespace, which also holds the bridge, so the machine's own interfaces, addresses and
routes are never touched. The subnet (10.213.X.0/24, X random), the namespace names and the bridge
name are unique to each `Network`, so two runs never collide.

- `cut(host)` / `restore(host)`: the host's switch port down / up (like pulling its cable).
- `impair(loss, delay)`: packet loss and delay on every link, on each host's outgoing side, so every
  packet between two hosts is delayed and may be lost once. With `tc netem` when the kernel has it;
  otherwise a small userspace wire (`python -m tests.cluster.netns wire`, in the switch namespace)
  carries each host's frames to the bridge with the same loss and delay. Offloads are turned off
  first, so that frames are real packets: loss hits one packet, not a 64 KB segment.
- `refuse_inbound_tcp(host)`: the host drops incoming TCP connection attempts (a classic BPF filter
  in tc), like a NAT router or a personal firewall: it can connect out, nobody can connect in.
- `start(host, argv)`: a process inside a host (`ip netns exec`); `close()` stops every process by
  pid, kills what is left inside the namespaces by pid, deletes the links (`ip link del`) and the
  namespaces (`ip netns del`). It runs at exit too, so a crashed test leaves nothing behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import functools
import heapq
import itertools
import json
import os
import random
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: processes run there so that `tests` is importable."""
PREFIX = "pyrodist-"
"""Every namespace of this harness is named pyrodist-<pid>x<random>-<host>."""
COMMAND_TIMEOUT = 30.0
"""Seconds one ip or tc command may take."""
STOP_TIMEOUT = 15.0
"""Seconds processes get to exit after SIGTERM before they are killed."""

# A classic BPF program for tc (direct action), offsets from the Ethernet header: TCP segments with SYN
# set and ACK clear (connection attempts) are dropped (TC_ACT_SHOT), everything else passes (TC_ACT_OK).
REFUSE_SYN_BYTECODE = ",".join(
    [
        "10",
        "40 0 0 12",  # ldh [12]                 ethertype
        "21 0 7 2048",  # jeq #0x800, else pass    IPv4 only
        "48 0 0 23",  # ldb [23]                 IP protocol
        "21 0 5 6",  # jeq #6, else pass        TCP only
        "177 0 0 14",  # ldxb 4*([14]&0xf)        IP header length
        "80 0 0 27",  # ldb [x+27]               TCP flags
        "84 0 0 18",  # and #0x12                SYN|ACK
        "21 0 1 2",  # jeq #0x02                SYN without ACK
        "6 0 0 2",  # ret #2                   TC_ACT_SHOT
        "6 0 0 0",  # ret #0                   TC_ACT_OK
    ]
)


class NetnsError(RuntimeError):
    """An ip or tc command failed."""


def command(*argv: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    """Run ip or tc (or any short command); its stdout, or NetnsError with its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@functools.cache
def unavailable_reason() -> str | None:
    """Why this machine cannot run the multi-host tests (None when it can): root, iproute2, namespaces."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the multi-host tests as root, e.g. in CI)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"iproute2's `{tool}` is not installed (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}-probe"
    try:
        command("ip", "netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace here: {exc}"
    try:
        command("ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except NetnsError as exc:
        return f"cannot create veth pairs here: {exc}"
    finally:
        command("ip", "netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One host of the network: its namespace, address and switch port."""

    name: str
    netns: str
    address: str
    port: str
    """The switch-side end of the host's veth (in the switch namespace)."""


class Network:
    """Namespaces, veth pairs, a bridge and the processes started in them; `close()` removes everything."""

    def __init__(self, hosts: Sequence[str], log_dir: Path) -> None:
        if len(set(hosts)) != len(hosts) or not 0 < len(hosts) < 200:
            raise ValueError(f"host names must be distinct, 1 to 199 of them: {hosts}")
        if any(len(name) > 12 or not name.isalnum() or name == "switch" for name in hosts):
            raise ValueError(f"host names must be alphanumeric, at most 12 characters, not 'switch': {hosts}")
        self.run_id = f"{os.getpid()}x{secrets.token_hex(3)}"
        self.subnet = f"10.213.{random.randrange(256)}"
        self.log_dir = log_dir
        self.switch = f"{PREFIX}{self.run_id}-switch"
        self.bridge = f"pdbr{self.run_id[-6:]}"
        self.hosts = {
            name: Host(name, f"{PREFIX}{self.run_id}-{name}", f"{self.subnet}.{11 + i}", f"v{name}")
            for i, name in enumerate(hosts)
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self._log_numbers = itertools.count()
        self._namespaces: list[str] = []
        self._wire: subprocess.Popen[bytes] | None = None
        self.cut_hosts: set[str] = set()
        self._impaired: str | None = None
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Network {self.run_id} {self.subnet}.0/24 hosts={list(self.hosts)}>"

    def address(self, host: str) -> str:
        """The host's IPv4 address."""
        return self.hosts[host].address

    # ---- building and tearing down

    def _add_namespace(self, name: str) -> None:
        command("ip", "netns", "add", name)
        self._namespaces.append(name)
        command("ip", "-n", name, "link", "set", "dev", "lo", "up")

    def _build(self) -> None:
        self._add_namespace(self.switch)
        command("ip", "-n", self.switch, "link", "add", "name", self.bridge, "type", "bridge")
        command("ip", "-n", self.switch, "link", "set", "dev", self.bridge, "up")
        for host in self.hosts.values():
            self._add_namespace(host.netns)
            command("ip", "link", "add", "name", "eth0", "netns", host.netns, "type", "veth",
                    "peer", "name", host.port, "netns", self.switch)  # fmt: skip
            command("ip", "-n", self.switch, "link", "set", "dev", host.port, "master", self.bridge, "up")
            command("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            command("ip", "-n", host.netns, "link", "set", "dev", "eth0", "up")

    def close(self) -> None:
        """Stop every process by pid, then delete the links and the namespaces; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        stop_processes([*self.processes, *([self._wire] if self._wire else [])])
        for netns in self._namespaces:  # anything still inside (a task's child process): by pid
            for pid in command("ip", "netns", "pids", netns, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        if self.switch in self._namespaces:
            links = [host.port for host in self.hosts.values()]
            links += [f"w{host.port}" for host in self.hosts.values()] + [self.bridge]
            present = command("ip", "-n", self.switch, "-o", "link", "show", check=False)
            for link in links:
                if f": {link}@" in present or f": {link}:" in present:
                    try:
                        command("ip", "-n", self.switch, "link", "del", "dev", link)
                    except NetnsError as exc:
                        errors.append(str(exc))
        for netns in reversed(self._namespaces):
            try:
                command("ip", "netns", "del", netns)
            except NetnsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise NetnsError("teardown left something behind: " + "; ".join(errors))

    # ---- processes

    def start(
        self,
        host: str,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        pipe_stdout: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start argv inside host with env (default: ours); output to a log file, stdout to a pipe if pipe_stdout."""
        netns = self.switch if host == "switch" else self.hosts[host].netns
        log = open(self.log_dir / f"{next(self._log_numbers):02d}-{host}-{name}.log", "wb")  # noqa: SIM115 - kept by the process
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv], cwd=ROOT, stdout=subprocess.PIPE if pipe_stdout else log,
                stderr=log, env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()  # the child has its own copy
        proc.log_path = log.name  # type: ignore[attr-defined]
        proc.name = f"{host}/{name}"  # type: ignore[attr-defined]
        self.processes.append(proc)
        return proc

    def python(self, host: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `python ARGS` (this interpreter) inside host."""
        return self.start(host, [sys.executable, *args], **kwargs)

    # ---- faults

    def cut(self, host: str) -> float:
        """Take the host's switch port down (its link loses carrier); returns the wall-clock time."""
        command("ip", "-n", self.switch, "link", "set", "dev", self.hosts[host].port, "down")
        self.cut_hosts.add(host)
        return time.time()

    def restore(self, host: str) -> float:
        """Bring the host's switch port back up; returns the wall-clock time."""
        command("ip", "-n", self.switch, "link", "set", "dev", self.hosts[host].port, "up")
        self.cut_hosts.discard(host)
        return time.time()

    def refuse_inbound_tcp(self, host: str) -> None:
        """Drop TCP connection attempts arriving at host (its own connections out still work)."""
        netns = self.hosts[host].netns
        command("tc", "-n", netns, "qdisc", "add", "dev", "eth0", "clsact")
        command("tc", "-n", netns, "filter", "add", "dev", "eth0", "ingress", "bpf", "da", "bytecode",
                REFUSE_SYN_BYTECODE)  # fmt: skip

    @functools.cached_property
    def has_netem(self) -> bool:
        """Whether the kernel has tc's netem qdisc."""
        try:
            command("tc", "-n", self.switch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        except NetnsError:
            return False
        command("tc", "-n", self.switch, "qdisc", "del", "dev", "lo", "root", check=False)
        return True

    def impair(self, loss_percent: float, delay_ms: float) -> str:
        """Loss and delay on every host's outgoing side; returns how ("tc netem" or the userspace wire)."""
        if self._impaired is not None:
            raise RuntimeError("the network is already impaired")
        for host in self.hosts.values():
            # Real packets (no offloaded checksums, no 64 KB segments): loss hits one packet, as on a wire.
            offload = self.python(host.name, ["-m", "tests.cluster.netns", "offload-off", "eth0"], name="offload-off")
            if offload.wait(COMMAND_TIMEOUT) != 0:
                raise NetnsError(f"could not turn offloads off on {host.name}: see {offload.log_path}")  # type: ignore[attr-defined]
        if self.has_netem:
            for host in self.hosts.values():
                command("tc", "-n", host.netns, "qdisc", "replace", "dev", "eth0", "root", "netem",
                        "delay", f"{delay_ms}ms", "loss", f"{loss_percent}%")  # fmt: skip
            self._impaired = "tc netem"
            return self._impaired
        pairs = []
        for host in self.hosts.values():
            wire_port, bridge_port = f"w{host.port}", f"b{host.port}"
            command("ip", "-n", self.switch, "link", "add", "name", wire_port, "type", "veth",
                    "peer", "name", bridge_port)  # fmt: skip
            command("ip", "-n", self.switch, "link", "set", "dev", bridge_port, "master", self.bridge, "up")
            command("ip", "-n", self.switch, "link", "set", "dev", wire_port, "up")
            command("ip", "-n", self.switch, "link", "set", "dev", host.port, "nomaster")
            pairs.append(f"{host.port}:{wire_port}")
        self._wire = self.python(
            "switch",
            ["-m", "tests.cluster.netns", "wire", "--loss", str(loss_percent), "--delay", str(delay_ms), *pairs],
            name="wire", pipe_stdout=True,
        )  # fmt: skip
        self.processes.remove(self._wire)  # stopped by clear_impairment (or close)
        line = read_line(self._wire, timeout=COMMAND_TIMEOUT)
        if not line.startswith("ready"):
            raise NetnsError(f"the userspace wire did not start: {line!r}; see {self._wire.log_path}")  # type: ignore[attr-defined]
        self._impaired = "userspace wire (this kernel has no sch_netem for tc netem)"
        return self._impaired

    @property
    def impaired(self) -> bool:
        """Whether impair() is in effect."""
        return self._impaired is not None

    def clear_impairment(self) -> dict[str, Any]:
        """Remove the loss and delay again; returns the wire's frame counts (empty with netem)."""
        stats: dict[str, Any] = {}
        if self._wire is not None:
            wire, self._wire = self._wire, None
            stop_processes([wire])
            with contextlib.suppress(ValueError, TimeoutError):
                stats = json.loads(read_line(wire, timeout=5.0) or "{}")
            assert wire.stdout is not None
            wire.stdout.close()
            for host in self.hosts.values():
                command("ip", "-n", self.switch, "link", "set", "dev", host.port, "master", self.bridge)
                command("ip", "-n", self.switch, "link", "del", "dev", f"w{host.port}")
        elif self._impaired is not None:
            for host in self.hosts.values():
                command("tc", "-n", host.netns, "qdisc", "del", "dev", "eth0", "root")
        self._impaired = None
        return stats


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line proc writes to its stdout pipe ("" at its end), waiting at most timeout seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"{proc.name} wrote no line within {timeout} s")  # type: ignore[attr-defined]
    return proc.stdout.readline().decode(errors="replace").strip()


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every live process (newest first), wait for all, then SIGKILL the process groups left."""
    for proc in reversed(procs):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in reversed(procs):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# ---- the userspace wire (runs in the switch namespace) ------------------------------------------


def wire_main(argv: Sequence[str]) -> int:
    """Carry frames between each host's port and its bridge port: host to bridge with loss and delay."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.netns wire")
    parser.add_argument("--loss", type=float, default=0.0, help="percent of frames from each host dropped")
    parser.add_argument("--delay", type=float, default=0.0, help="milliseconds each frame from a host is held")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("pairs", nargs="+", metavar="HOSTPORT:BRIDGEPORT")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    delay = args.delay / 1000.0
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    routes: dict[int, tuple[socket.socket, socket.socket, bool]] = {}
    sel = selectors.DefaultSelector()
    for pair in args.pairs:
        host_port, bridge_port = pair.split(":")
        from_host, to_bridge = _packet_socket(host_port), _packet_socket(bridge_port)
        routes[from_host.fileno()] = (from_host, to_bridge, True)
        routes[to_bridge.fileno()] = (to_bridge, from_host, False)
        sel.register(from_host, selectors.EVENT_READ)
        sel.register(to_bridge, selectors.EVENT_READ)
    counts = {"passed": 0, "dropped": 0, "send_errors": 0}
    held: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    print("ready", flush=True)
    while not stopping:
        wait = 0.2 if not held else min(0.2, max(0.0, held[0][0] - time.monotonic()))
        for key, _ in sel.select(wait):
            source, target, impaired = routes[key.fd]
            while True:
                try:
                    frame, address = source.recvfrom(65536)
                except BlockingIOError:
                    break
                if address[2] == socket.PACKET_OUTGOING:
                    continue  # our own sends, seen again
                if impaired and rng.random() * 100 < args.loss:
                    counts["dropped"] += 1
                elif impaired and delay > 0:
                    seq += 1
                    heapq.heappush(held, (time.monotonic() + delay, seq, target, frame))
                else:
                    counts[_send(target, frame)] += 1
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, target, frame = heapq.heappop(held)
            counts[_send(target, frame)] += 1
    print(json.dumps({**counts, "held_at_exit": len(held)}), flush=True)
    return 0


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((ifname, 0x0003))
    sock.setblocking(False)
    return sock


def _send(target: socket.socket, frame: bytes) -> str:
    try:
        target.send(frame)
    except OSError:  # the port is down (a cut link) or its queue is full: the frame is lost
        return "send_errors"
    return "passed"


def offload_off_main(argv: Sequence[str]) -> int:
    """Turn off checksum, scatter-gather and segmentation offloads of an interface (legacy ethtool ioctls)."""
    ifname = argv[0]
    for set_command in (0x17, 0x19, 0x1F, 0x24):  # ETHTOOL_STXCSUM, _SSG, _STSO, _SGSO
        value = ctypes.create_string_buffer(struct.pack("II", set_command, 0), 8)
        request = bytearray(struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0"))
        # Already off (or fixed off) is fine.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            fcntl.ioctl(sock.fileno(), 0x8946, request)  # SIOCETHTOOL
    return 0


def cleanup_main(out: IO[str]) -> int:
    """Delete namespaces left by runs whose process is gone (after a SIGKILL), with what runs inside them."""
    for line in command("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX) :].split("x", 1)[0]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # its run is still going
        for pid in command("ip", "netns", "pids", name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        command("ip", "netns", "del", name, check=False)
        print(f"deleted stale namespace {name}", file=out)
    return 0


def main(argv: Sequence[str]) -> int:
    """`python -m tests.cluster.netns wire|offload-off|cleanup ...`."""
    if argv and argv[0] == "wire":
        return wire_main(argv[1:])
    if argv and argv[0] == "offload-off" and len(argv) == 2:
        return offload_off_main(argv[1:])
    if argv and argv[0] == "cleanup":
        return cleanup_main(sys.stdout)
    print("usage: python -m tests.cluster.netns wire|offload-off IFNAME|cleanup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
