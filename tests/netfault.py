"""Real network faults for a private redis-server: network namespaces, veth and iptables.

A :class:`Lab` makes a network namespace, joins it to this one with a veth pair on a
private /30 (``10.213.X.Y``), and runs its own ``redis-server`` inside it. Faults are
injected inside that namespace only, for a bounded time, so nothing on this machine
outside the lab (and nothing off it) is touched:

- ``none``: the control run, same load and no fault;
- ``blackhole``: iptables DROP both ways on the veth, existing and new flows (3 s);
- ``loss``: 5 % random packet loss both ways (3 s);
- ``reset``: TCP RST to every flow established when the fault starts (1 s window);
- ``stall``: SIGSTOP the server for 2 s, then SIGCONT;
- ``restart``: stop and start the server (data is lost: no persistence);
- ``latency``: 20 +/- 5 ms added to every reply by :class:`tests.proxy.DelayProxy`;
- ``slow_handshake``: SYNs dropped for 3 s after every client is disconnected, so each
  reconnect waits on SYN retransmits while no established flow is touched.

Everything the lab makes carries the prefix ``rpf`` and this process's pid in its name
(``rpf<pid>n<k>`` namespace, ``rpf<pid>h<k>`` veth), is removed by name and pid in
:meth:`Lab.close`, and leftovers of crashed earlier runs (whose pid is gone) are swept
by :func:`sweep_stale`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

from redispool._server import ServerNotFound, find_redis_server

from .proxy import DelayProxy

PREFIX = "rpf"
PORT = 6379  # inside the lab's own namespace: nothing else listens there
_NAME = re.compile(rf"^{PREFIX}(\d+)([nh])(\d+)$")
_counter = itertools.count()

# How long each fault lasts (seconds).
DURATIONS = {
    "none": 0.0,  # the control: the same load, no fault
    "blackhole": 3.0,
    "loss": 3.0,
    "reset": 1.0,
    "stall": 2.0,
    "restart": 0.0,
    "latency": 3.0,
    "slow_handshake": 3.0,
}
FAULTS = tuple(DURATIONS)
SOAK_FAULTS = tuple(fault for fault in FAULTS if fault != "none")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def prerequisites() -> str | None:
    """Why the lab cannot run here (root, iproute2, iptables, redis-server), or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "network fault tests need root (network namespaces and iptables)"
    tools = (
        ("ip", "iproute2"),
        ("ss", "iproute2"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
    )
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"network fault tests need `{tool}`: apt-get install {package}"
    try:
        find_redis_server()
    except ServerNotFound as error:
        return str(error)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove namespaces and veths with our prefix whose creating process is gone."""
    removed: list[str] = []
    namespaces = _run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in namespaces:
        name = line.split(" ")[0]
        match = _NAME.match(name)
        if not match or match.group(2) != "n" or _alive(int(match.group(1))):
            continue
        for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", name, check=False)
        removed.append(name)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        match = _NAME.match(name)
        if match and match.group(2) == "h" and not _alive(int(match.group(1))):
            _run("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> int:
    """A free 10.213.X.Y/30 base as an int, chosen from this pid, not in use on the host."""
    used = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    start = (os.getpid() * 4) % (1 << 14)
    for step in range(1 << 14):
        base = ((start + step * 4) % (1 << 16)) & ~3
        host = f"10.213.{base >> 8}.{(base & 255) + 1}"
        peer = f"10.213.{base >> 8}.{(base & 255) + 2}"
        if f" {host}/" not in used and f" {peer}/" not in used:
            return base
    raise RuntimeError("no free /30 left in 10.213.0.0/16")


class Lab:
    """One namespace, one veth pair, one redis-server inside; faults injected there."""

    def __init__(self) -> None:
        k = next(_counter)
        pid = os.getpid()
        self.netns = f"{PREFIX}{pid}n{k}"
        self.host_if = f"{PREFIX}{pid}h{k}"
        self.peer_if = f"{PREFIX}{pid}p{k}"
        self.dir = tempfile.mkdtemp(prefix="redispool-netfault-")
        self.binary = find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: DelayProxy | None = None
        self.restarts = 0
        self._made_ns = False
        self._made_link = False
        base = _free_subnet()
        self.host_addr = f"10.213.{base >> 8}.{(base & 255) + 1}"
        self.addr = f"10.213.{base >> 8}.{(base & 255) + 2}"

    # ------------------------------------------------------------------ set-up

    def open(self) -> Lab:
        sweep_stale()
        try:
            _run("ip", "netns", "add", self.netns)
            self._made_ns = True
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            self._made_link = True
            _run("ip", "link", "set", self.peer_if, "netns", self.netns)
            _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self._ns("ip", "addr", "add", f"{self.addr}/30", "dev", self.peer_if)
            self._ns("ip", "link", "set", self.peer_if, "up")
            self._ns("ip", "link", "set", "lo", "up")
            self.start_server()
        except BaseException:
            self.close()
            raise
        return self

    def _ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.netns, *argv, check=check)

    def start_server(self, timeout: float = 10.0) -> None:
        argv = [
            "ip", "netns", "exec", self.netns, self.binary, "--port", str(PORT), "--bind", self.addr,
            "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", self.dir,
            "--daemonize", "no", "--loglevel", "warning", "--maxclients", "2000",
        ]  # fmt: skip
        log = open(os.path.join(self.dir, "server.log"), "ab")  # noqa: SIM115 - the child keeps it
        try:
            # `ip netns exec` execs the server, so this pid is redis-server's own.
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server in {self.netns} exited: {self.output()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.addr, PORT), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)  # polling a starting process; there is no event to wait on
        raise RuntimeError(f"redis-server in {self.netns} did not answer within {timeout}s")

    def stop_server(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a stalled server cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def output(self) -> str:
        with open(os.path.join(self.dir, "server.log"), "rb") as log:
            return log.read().decode(errors="replace")

    def delay_proxy(self) -> DelayProxy:
        """A loopback proxy to the server that adds latency on demand (started once)."""
        if self.proxy is None:
            self.proxy = DelayProxy(self.addr, PORT)
        return self.proxy

    def close(self) -> None:
        """Remove everything this lab made: proxy, server (by pid), veth, namespace."""
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        self.stop_server()
        if self._made_ns:
            for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        if self._made_link:
            _run("ip", "link", "del", self.host_if, check=False)
            self._made_link = False
        if self._made_ns:
            _run("ip", "netns", "del", self.netns, check=False)
            self._made_ns = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ endpoints

    def endpoint(self, fault: str) -> tuple[str, int]:
        """Where clients connect for ``fault``: through the delay proxy for latency."""
        if fault == "latency":
            return "127.0.0.1", self.delay_proxy().port
        return self.addr, PORT

    # ------------------------------------------------------------------ faults

    def _iptables(self, *rules: list[str]) -> None:
        """Add ``rules`` to the lab namespace's filter table, all at once (iptables-restore)."""
        if not rules:
            return
        script = "*filter\n" + "".join(" ".join(rule) + "\n" for rule in rules) + "COMMIT\n"
        argv = ["ip", "netns", "exec", self.netns, "iptables-restore", "-w", "--noflush"]
        subprocess.run(argv, input=script, check=True, capture_output=True, text=True, timeout=30)

    def heal(self) -> None:
        """Undo every network fault: flush the lab namespace's filter rules."""
        self._ns("iptables", "-w", "-F", "INPUT", check=False)
        self._ns("iptables", "-w", "-F", "OUTPUT", check=False)
        if self.proxy is not None:
            self.proxy.delay = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def established_client_ports(self) -> list[int]:
        out = self._ns("ss", "-Htn", "state", "established", f"( sport = :{PORT} )").stdout
        return [int(line.split()[-1].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()]

    def forget_flows(self) -> None:
        """Silently drop every flow established now, both ways, as a NAT or firewall that
        forgot them would; new connections pass. Undone by :meth:`heal`."""
        rules: list[list[str]] = []
        for port in self.established_client_ports():
            rules.append(["-A", "INPUT", "-i", self.peer_if, "-p", "tcp", "--sport", str(port), "-j", "DROP"])
            rules.append(
                ["-A", "OUTPUT", "-o", self.peer_if, "-p", "tcp", "--dport", str(port), "-j", "DROP"]
            )
        self._iptables(*rules)

    def admin(self) -> socket.socket:
        """A raw connection to the server, opened before a fault that blocks new ones."""
        return socket.create_connection((self.addr, PORT), timeout=2)

    def inject(self, fault: str, hold: Callable[[float], None] = time.sleep) -> tuple[float, float]:
        """Inject ``fault`` for its bounded duration; return its (start, end) monotonic times.

        ``hold`` waits out the fault (the soak script passes a stop-aware wait). The fault
        is always undone, even if ``hold`` raises.
        """
        duration = DURATIONS[fault]
        start = time.monotonic()
        try:
            if fault == "none":
                pass
            elif fault == "blackhole":
                self._iptables(["-A", "INPUT", "-i", self.peer_if, "-j", "DROP"],
                               ["-A", "OUTPUT", "-o", self.peer_if, "-j", "DROP"])  # fmt: skip
            elif fault == "loss":
                random = ["-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP"]
                self._iptables(["-A", "INPUT", "-i", self.peer_if, *random],
                               ["-A", "OUTPUT", "-o", self.peer_if, *random])  # fmt: skip
            elif fault == "reset":
                self._iptables(*(["-A", "INPUT", "-i", self.peer_if, "-p", "tcp", "--sport", str(port),
                                  "-j", "REJECT", "--reject-with", "tcp-reset"]
                                 for port in self.established_client_ports()))  # fmt: skip
            elif fault == "stall":
                assert self.process is not None
                os.kill(self.process.pid, signal.SIGSTOP)
            elif fault == "restart":
                self.stop_server()
                self.restarts += 1
                self.start_server()
            elif fault == "latency":
                self.delay_proxy().delay = (0.015, 0.025)
            elif fault == "slow_handshake":
                with self.admin() as admin:  # established before the SYNs are dropped
                    self._iptables(["-A", "INPUT", "-i", self.peer_if, "-p", "tcp", "--syn", "-j", "DROP"])
                    # Every client must reconnect now, through the dropped SYNs.
                    admin.sendall(b"CLIENT KILL TYPE normal SKIPME yes\r\n")
                    admin.recv(64)
            else:
                raise ValueError(f"fault must be one of {', '.join(FAULTS)}, not {fault!r}")
            if duration:
                hold(duration)
        finally:
            self.heal()
        return start, time.monotonic()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    with Lab() as made:
        yield made


def hold_until(stop: threading.Event) -> Callable[[float], None]:
    """A ``hold`` for :meth:`Lab.inject` that ends early when ``stop`` is set."""

    def hold(seconds: float) -> None:
        stop.wait(seconds)

    return hold
