"""Fixtures: each test (or module) starts its OWN `felice server` on a free
loopback port with a temporary data folder, and stops it by PID afterwards.

  broker          a fresh broker with default settings, for one test
  make_broker     a factory: make_broker({"key": "value"}, ...) -> started Broker,
                  every one stopped at the end of the test
  shared_broker   one broker for a whole module (tests that do not change broker state)

The binary is $FELICE_BIN, by default target/release/felice (scripts/test builds it).
"""

from __future__ import annotations

import pytest

from harness import Broker, BrokerError, felice_bin

_ACTIVE: list[Broker] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    path = felice_bin()
    if not path.exists():
        pytest.exit(f"broker binary {path} not found: run scripts/test (it builds it) or set FELICE_BIN", 2)


@pytest.fixture(autouse=True)
def _broker_logs_on_failure(request):
    """On a failed test, print the tail of every module-wide broker's log (pytest
    shows it in the report; per-test brokers print theirs when they stop)."""
    yield
    if _test_failed(request):
        for b in list(_ACTIVE):
            print(f"\n----- broker {b.address} (pid {b.pid}) log tail: {b.log_path}")
            print(b.log_tail(80))
    for b in list(_ACTIVE):
        if b.proc is not None and not b.alive() and not b.expected_exit:
            b.expected_exit = True      # report it once, here, for the test during which it died
            raise BrokerError(f"broker {b.address} died (exit code {b.proc.returncode}) during this test:\n"
                              f"{b.log_tail()}")


def _start(workdir, overrides=None, **kw) -> Broker:
    b = Broker(workdir, overrides=overrides, **kw)
    _ACTIVE.append(b)
    try:
        b.start()
    except BaseException:
        _ACTIVE.remove(b)
        b.kill9()
        raise
    return b


def _test_failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


def _finish(b: Broker, test_failed: bool = False):
    """Stop the broker. A broker that died on its own is an error of the test
    that used it, unless that test already failed (and said why)."""
    try:
        _ACTIVE.remove(b)
    except ValueError:
        pass
    if test_failed:
        print(f"\n----- broker {b.address} (pid {b.pid}) log tail: {b.log_path}")
        print(b.log_tail(80))
    try:
        rc, elapsed, killed = b.stop()
    except BrokerError:
        if test_failed:
            return
        raise
    if killed:
        raise BrokerError(f"broker {b.address} ignored SIGTERM; killed after {elapsed:.1f}s:\n{b.log_tail()}")


@pytest.fixture
def broker(tmp_path, request) -> Broker:
    b = _start(tmp_path / "broker")
    yield b
    _finish(b, _test_failed(request))


@pytest.fixture
def make_broker(tmp_path, request):
    made: list[Broker] = []

    def make(overrides: dict[str, str] | None = None, **kw) -> Broker:
        b = _start(tmp_path / f"broker{len(made)}", overrides, **kw)
        made.append(b)
        return b
    yield make
    errors = []
    for b in made:
        try:
            _finish(b, _test_failed(request))
        except BrokerError as exc:
            errors.append(str(exc))
    if errors:
        raise BrokerError("\n".join(errors))


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory) -> Broker:
    b = _start(tmp_path_factory.mktemp("shared-broker"))
    yield b
    _finish(b)
