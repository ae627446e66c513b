"""Starts and stops what a soak or churn run needs, on loopback only: an engine with its own
state directory, the echo upstream, and one `rstream forward` per tunnel. Every wait is
bounded; stop() ends every process this harness started (newest first: agents before their
engine), and nothing else."""
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SANITIZER_REPORT = re.compile(rb"ERROR: (AddressSanitizer|LeakSanitizer)|: runtime error: |SUMMARY: [A-Za-z]+Sanitizer")
ENGINE_HOST = "localhost"


class SetupError(Exception):
    """Something the run needs did not come up; the message says what and where to look."""


def raise_fd_limit():
    """Raises the soft open-file limit to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """A socket listens on PORT (read from /proc/net/tcp*, without connecting to it)."""
    want = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[1].rsplit(":", 1)[1] == want and fields[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def is_asan_build(binary):
    """The binary was built with AddressSanitizer (its RSS then says little about ours)."""
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data


# ---- what /proc and ss say about a process ----

def fd_count(pid):
    """Open descriptors of PID; None when it ended (a zombie lists none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError):
        return None


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def close_wait_counts(pids):
    """CLOSE_WAIT TCP sockets held by each of PIDS (`ss -tanpH state close-wait`)."""
    counts = {pid: 0 for pid in pids}
    try:
        out = subprocess.run(["ss", "-tanpH", "state", "close-wait"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {pid: None for pid in pids}
    for line in out.splitlines():
        for pid in pids:
            if f"pid={pid}," in line:
                counts[pid] += 1
    return counts


class Process:
    def __init__(self, name, popen, out_path, err_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.out_path = out_path
        self.err_path = err_path

    def alive(self):
        return self.popen.poll() is None


class Harness:
    """One run's engine, upstream and agents. `with Harness(...) as h:` stops them at the end."""

    def __init__(self, bin_dir, log_dir=None, keep=False, engine_log_level="info", say=print):
        self.bin_dir = os.path.abspath(bin_dir)
        self.keep = keep
        self.say = say
        self.engine_log_level = engine_log_level
        self.work = tempfile.mkdtemp(prefix="rstream-soak.")
        self.logs = os.path.abspath(log_dir) if log_dir else os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        os.makedirs(os.path.join(self.work, "home"), exist_ok=True)
        self.procs = []
        self._checked = 0.0
        self._abort = None
        self.engine = None
        self.engine_port = None
        self.token = None
        self.protocol_version = None
        for b in ("rstream", "rstream-nc", "rstream-engine"):
            if not os.access(self.binary(b), os.X_OK):
                raise SetupError(f"{self.binary(b)} is missing or not executable (build first, or pass --bin DIR)")

    def binary(self, name):
        return os.path.join(self.bin_dir, name)

    @property
    def ca_file(self):
        return os.path.join(self.work, "engine", "ca.pem")

    def base_env(self):
        """The caller's environment without any RSTREAM_ setting, HOME in the work directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RSTREAM_")}
        env["HOME"] = os.path.join(self.work, "home")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        return env

    def agent_env(self):
        env = self.base_env()
        env["RSTREAM_ENGINE"] = f"{ENGINE_HOST}:{self.engine_port}"
        env["RSTREAM_TLS_CACERT_FILE"] = self.ca_file
        env["RSTREAM_AUTHENTICATION_TOKEN"] = self.token
        return env

    def spawn(self, name, argv, env):
        out_path = os.path.join(self.logs, f"{name}.log")
        err_path = os.path.join(self.logs, f"{name}.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        proc = Process(name, popen, out_path, err_path)
        self.procs.append(proc)
        return proc

    def wait_until(self, what, limit, cond, proc=None):
        deadline = time.monotonic() + limit
        while not cond():
            if proc is not None and not proc.alive():
                raise SetupError(f"{proc.name} exited ({proc.popen.returncode}) before {what}; see {proc.err_path}")
            if time.monotonic() >= deadline:
                raise SetupError(f"timed out after {limit}s waiting for {what}")
            time.sleep(0.1)

    # ---- the engine, the upstream, the agents ----

    def start_engine(self, extra_env=None):
        self.engine_port = free_port()
        env = self.base_env()
        env.update(extra_env or {})
        state = os.path.join(self.work, "engine")
        self.engine = self.spawn("engine", [self.binary("rstream-engine"), "--state-dir", state, "--listen",
                                            f"127.0.0.1:{self.engine_port}", "--log-format", "text",
                                            "--log-level", self.engine_log_level], env)
        token = os.path.join(state, "admin.token")
        self.wait_until(f"the engine to listen on 127.0.0.1:{self.engine_port}", 60,
                        lambda: listening(self.engine_port) and os.path.exists(token) and os.path.getsize(token) > 0,
                        self.engine)
        with open(token) as f:
            self.token = f.read().strip()
        out = subprocess.run([self.binary("rstream"), "version"], capture_output=True, text=True, timeout=60,
                             env=self.base_env(), check=False).stdout
        m = re.search(r"\(protocol ([0-9]+\.[0-9]+\.[0-9]+)\)", out)
        if not m:
            raise SetupError(f"`rstream version` printed no protocol version: {out!r}")
        self.protocol_version = m.group(1)
        self.say(f"engine pid {self.engine.pid} on 127.0.0.1:{self.engine_port} (protocol {self.protocol_version})")

    def start_upstream(self):
        """The echo upstream (TCP echo and HTTP POST echo) in its own process; returns the ports."""
        tcp_port, http_port = free_port(), free_port()
        soak = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "soak")
        proc = self.spawn("upstream", [sys.executable, soak, "upstream", "--tcp-port", str(tcp_port),
                                       "--http-port", str(http_port)], self.base_env())
        self.wait_until("the echo upstream to listen", 30, lambda: listening(tcp_port) and listening(http_port), proc)
        return tcp_port, http_port

    def start_forward(self, name, target, *args):
        """`rstream forward TARGET ARGS...`; waits until it is online and returns (process, the
        address of its forwarding line)."""
        proc = self.spawn(name, [self.binary("rstream"), "forward", str(target), "-o", "text", *args],
                          self.agent_env())
        forwarding = [None]

        def online():
            try:
                with open(proc.out_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                return False
            if not re.search(r"^  status +online", text, re.M):
                return False
            m = re.findall(r"^  forwarding   (\S+) -> ", text, re.M)
            if m:
                forwarding[0] = m[-1]
            return forwarding[0] is not None

        self.wait_until(f"{name} (rstream forward) to be online", 60, online, proc)
        self.say(f"{name} pid {proc.pid}: {forwarding[0]}")
        return proc, forwarding[0]

    # ---- checks and the end ----

    def dead(self):
        """The processes that ended while they should run."""
        return [p for p in self.procs if not p.alive()]

    def abort_reason(self):
        """Why the run cannot go on (a process it needs ended), or None. Checked at most every
        0.5 s."""
        now = time.monotonic()
        if now - self._checked >= 0.5 or self._abort:
            self._checked = now
            if self._abort is None:
                dead = self.dead()
                if dead:
                    self._abort = "; ".join(
                        f"{p.name} (pid {p.pid}) ended with code {p.popen.returncode}"
                        + (" (0: it was sent SIGTERM or SIGINT, from outside this run)" if p.popen.returncode == 0 else "")
                        for p in dead)
        return self._abort

    def sanitizer_reports(self):
        found = []
        for name in sorted(os.listdir(self.logs)):
            path = os.path.join(self.logs, name)
            if not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as f:
                    if SANITIZER_REPORT.search(f.read()):
                        found.append(path)
            except OSError:
                continue
        return found

    def stop(self):
        """SIGTERM to every process started, newest first; SIGKILL to those still running after
        15 s. Returns {name: exit code}."""
        for p in reversed(self.procs):
            if p.alive():
                try:
                    p.popen.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{p.name} (pid {p.pid}) still running after SIGTERM; killing it")
                p.popen.kill()
                p.popen.wait(timeout=30)
        return {p.name: p.popen.returncode for p in self.procs}

    def cleanup(self):
        if self.keep:
            self.say(f"kept {self.work} (logs in {self.logs})")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
