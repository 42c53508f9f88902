"""A dead process fails its test (issue 27, item 3): the fixtures of
tests/conftest.py, run by an inner pytest on tests that kill a server or a
client at or after their last call (a shim test hook, Server.crash, and
os.kill), must report each death with its exit status and last output;
a death the test declared its expected outcome (Server.expect_death) must
not fail it.  Also: Server.events() and Client.events() on a dead process
raise an error that says so, with the exit status."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.errors import ClientError, ServerCrashed

HERE = Path(__file__).resolve().parent

# The inner tests; each kills a process where a real crash would happen.
INNER = '''
import os
import signal
import time

from spice_initial_draw import patterns


def scanout(srv):
    srv.display(0).scanout(patterns.quadrants(320, 240))


def test_server_dies_after_the_last_call(make_server):
    srv = make_server(codecs="gstreamer:mjpeg")
    scanout(srv)
    srv.crash(signal.SIGSEGV)          # nothing of the test sees it


def test_server_dies_as_the_client_disconnects_in_teardown(make_server, make_client):
    srv = make_server(codecs="gstreamer:mjpeg")
    scanout(srv)
    cli = make_client(srv, "mjpeg")
    cli.wait_ready()
    close = cli.close

    def close_and_crash():
        status = close()
        os.kill(srv.pid, signal.SIGABRT)   # the disconnect's crash
        time.sleep(0.5)
        return status
    cli.close = close_and_crash


def test_client_dies_after_the_last_call(make_server, make_client):
    srv = make_server(codecs="gstreamer:mjpeg")
    scanout(srv)
    cli = make_client(srv, "mjpeg")
    cli.wait_ready()
    os.kill(cli._worker.proc.pid, signal.SIGSEGV)
    time.sleep(0.5)


def test_declared_death_is_the_outcome(make_server):
    srv = make_server(codecs="gstreamer:mjpeg")
    srv.expect_death("the test kills it")
    srv.crash(signal.SIGSEGV)


def test_clean_end(make_server, make_client):
    srv = make_server(codecs="gstreamer:mjpeg")
    scanout(srv)
    make_client(srv, "mjpeg").wait_ready()
'''


@pytest.fixture(scope="module")
def inner_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The inner pytest's output (-rA: every test's outcome and message)."""
    top = tmp_path_factory.mktemp("inner")
    shutil.copy(HERE / "conftest.py", top / "conftest.py")
    (top / "test_inner.py").write_text(INNER)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          "-rA", "-q", str(top)], cwd=top, capture_output=True,
                         text=True, timeout=300)
    return run.stdout + run.stderr


def outcomes(out: str, name: str) -> set[str]:
    """The short summary's outcomes of test `name` (a call that passed and
    a teardown that failed: PASSED and ERROR)."""
    found = {ln.split()[0] for ln in out.splitlines()
             if ln.split()[:1] in (["PASSED"], ["FAILED"], ["ERROR"])
             and ln.split()[1:2] == [f"test_inner.py::{name}"]}
    assert found, f"{name} not in the inner run's summary:\n{out[-4000:]}"
    return found


def teardown_error(out: str, name: str) -> str:
    """The inner run's report of the error at the teardown of `name`."""
    lines = out.splitlines()
    start = next((i for i, ln in enumerate(lines)
                  if f"ERROR at teardown of {name} " in ln), None)
    assert start is not None, f"no teardown error of {name}:\n{out[-4000:]}"
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(("____", "===="))), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("name,says", [
    ("test_server_dies_after_the_last_call", "SIGSEGV"),
    ("test_server_dies_as_the_client_disconnects_in_teardown", "SIGABRT"),
    ("test_client_dies_after_the_last_call", f"status {-signal.SIGSEGV}"),
])
def test_a_death_after_the_last_call_fails_the_test(inner_run: str, name: str, says: str):
    assert outcomes(inner_run, name) == {"PASSED", "ERROR"}, inner_run[-4000:]
    report = teardown_error(inner_run, name)
    assert "died" in report and says in report and "last output" in report, report


@pytest.mark.parametrize("name", ["test_declared_death_is_the_outcome", "test_clean_end"])
def test_a_declared_death_or_a_clean_end_passes(inner_run: str, name: str):
    assert outcomes(inner_run, name) == {"PASSED"}, inner_run[-4000:]


def test_events_of_a_dead_server_say_it_died(make_server):
    srv = make_server(codecs="gstreamer:mjpeg")
    srv.display(0).scanout(patterns.quadrants(64, 48))
    assert srv.events()          # the log of the live server
    srv.expect_death("the test kills it")
    srv.crash(signal.SIGKILL)
    with pytest.raises(ServerCrashed, match="dead.*SIGKILL"):
        srv.events()


def test_events_of_a_dead_client_say_it_died(make_server, make_client):
    srv = make_server(codecs="gstreamer:mjpeg")
    srv.display(0).scanout(patterns.quadrants(64, 48))
    cli = make_client(srv, "mjpeg")
    cli.wait_ready()
    os.kill(cli._worker.proc.pid, signal.SIGKILL)
    cli._worker.wait(5)
    with pytest.raises(ClientError, match=f"dead \\(status {-signal.SIGKILL}\\)"):
        cli.events()
    cli.vanished = True          # its death is this test's doing
