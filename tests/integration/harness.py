"""Starting and stopping a real `felice server` process for one test.

Every test (or module) gets its own broker on a free loopback port with its
own data folder. The broker is stopped by PID: SIGTERM first, SIGKILL if it
has not exited after a timeout. No sleeping to synchronise: readiness is an
event (the port answers an ApiVersions request), polled with a bound.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import rawwire

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "felice"

START_TIMEOUT = float(os.environ.get("FELICE_START_TIMEOUT", "20"))
STOP_TIMEOUT = float(os.environ.get("FELICE_STOP_TIMEOUT", "10"))


def felice_bin() -> Path:
    return Path(os.environ.get("FELICE_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(kind: str) -> str:
    return f"it-{kind}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Call predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class BrokerError(AssertionError):
    pass


class Broker:
    """One `felice server` process. start()/stop()/kill9()/restart() keep the
    same port and the same data folder, so a restart sees the data the
    previous process left behind."""

    def __init__(self, workdir: Path, overrides: dict[str, str] | None = None,
                 config_file: Path | None = None, address_from_config: bool = False,
                 port: int | None = None, binary: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "broker.log"
        self.port = port or free_port()
        self.binary = Path(binary or felice_bin())
        self.base_overrides = dict(overrides or {})
        self.config_file = config_file
        # When the listener and data folder come from the --config file, do not pass them again.
        self.address_from_config = address_from_config
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.expected_exit = False
        self._log = None

    # -- addresses ------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    bootstrap = address

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- command line ---------------------------------------------------
    def command(self, extra_overrides: dict[str, str] | None = None) -> list[str]:
        cmd = [str(self.binary), "server"]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        overrides = {}
        if not self.address_from_config:
            overrides["listeners"] = f"PLAINTEXT://{self.address}"
            overrides["log.dirs"] = str(self.data_dir)
        overrides.update(self.base_overrides)
        overrides.update(extra_overrides or {})
        for key, value in overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    # -- lifecycle ------------------------------------------------------
    def start(self, extra_overrides: dict[str, str] | None = None, wait: bool = True) -> "Broker":
        assert not self.alive(), "broker already running"
        if not self.binary.exists():
            raise BrokerError(f"broker binary {self.binary} does not exist (build it: cargo build --release, "
                              f"or point FELICE_BIN at it)")
        if extra_overrides:
            self.base_overrides.update(extra_overrides)
        self.starts += 1
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        self._log.flush()
        self.expected_exit = False
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the port answers an ApiVersions request; fail with the log if the process exits."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self.proc.returncode} during start-up:\n"
                                  f"{self.log_tail()}")
            try:
                with rawwire.Connection(self.host, self.port, timeout=2) as conn:
                    error, _ = conn.api_versions()
                    if error == 0:
                        return
                    last_error = f"ApiVersions error {error}"
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        self.kill9()
        raise BrokerError(f"broker did not answer on {self.address} within {timeout}s ({last_error}):\n"
                          f"{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> tuple[int, float, bool]:
        """SIGTERM, then SIGKILL after timeout. Returns (exit code, seconds taken, whether SIGKILL was needed)."""
        if self.proc is None:
            return (0, 0.0, False)
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._close_log()
            if not self.expected_exit:
                self.expected_exit = True
                raise BrokerError(f"broker had already exited (code {rc}) before it was stopped:\n"
                                  f"{self.log_tail()}")
            return (rc, 0.0, False)
        self.expected_exit = True
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        killed = False
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
            self.proc.kill()
            self.proc.wait(10)
        elapsed = time.monotonic() - started
        self._close_log()
        return (self.proc.returncode, elapsed, killed)

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def restart(self, extra_overrides: dict[str, str] | None = None, hard: bool = False) -> "Broker":
        if hard:
            self.kill9()
        else:
            rc, _, killed = self.stop()
            assert not killed, f"broker ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.log_tail()}"
        return self.start(extra_overrides)

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- diagnostics ----------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, TypeError):
            return None
        return None


def run_felice(args: list[str], cwd: Path | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run `felice ARGS` to completion (bounded); a process still running after timeout is killed."""
    proc = subprocess.Popen([str(felice_bin())] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"`felice {' '.join(args)}` still running after {timeout}s; killed.\n"
                             f"stdout:\n{out.decode(errors='replace')}\nstderr:\n{err.decode(errors='replace')}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))
