"""`make run` supervises the app's processes (scripts/stack.py): a killed one comes back after a
backoff, one in a crash loop is reported and left stopped while the others keep running, and
stopping ends them all. Real processes; no services needed."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("stack", ROOT / "scripts" / "stack.py")
stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stack)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _until(condition, supervisor, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        supervisor.check()
        time.sleep(0.02)


@pytest.fixture
def supervisor_of():
    made = []

    def make(children, **options):
        supervisor = stack.Supervisor(children, **options)
        supervisor.start()
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop()


def test_a_killed_process_comes_back_after_a_backoff_and_says_so(supervisor_of, capsys):
    worker, web = stack.Child("Celery worker", SLEEPER), stack.Child("web server", SLEEPER)
    supervisor = supervisor_of([worker, web], backoff=0.3)
    first = worker.process.pid
    os.kill(first, signal.SIGKILL)  # as the out-of-memory killer does
    _until(lambda: worker.restart_at is not None, supervisor)
    assert worker.process.pid == first  # not at once: after the backoff
    _until(lambda: worker.process.pid != first, supervisor)
    assert worker.process.poll() is None and web.process.poll() is None
    out = capsys.readouterr().out
    assert "the Celery worker exited with code -9; restarting it in 0 s" in out
    assert f"the Celery worker restarted (pid {worker.process.pid})" in out
    # A second death soon after waits twice as long.
    second = worker.process.pid
    os.kill(second, signal.SIGKILL)
    _until(lambda: worker.restart_at is not None, supervisor)
    assert worker.restart_at - time.monotonic() > 0.3


def test_a_crash_loop_is_reported_and_left_stopped_while_the_rest_runs(supervisor_of, capsys):
    broken = stack.Child("Celery beat", [sys.executable, "-c", "raise SystemExit(3)"])
    web = stack.Child("web server", SLEEPER)
    supervisor = supervisor_of([broken, web], backoff=0.01, loop_deaths=3, loop_seconds=30)
    _until(lambda: broken.given_up, supervisor)
    out = capsys.readouterr().out
    assert out.count("the Celery beat exited with code 3") == 2
    assert "the Celery beat is in a crash loop (3 exits in 30 s, the last with code 3): left stopped" in out
    pid = broken.process.pid
    for _ in range(20):  # not spun: nothing more is started
        supervisor.check()
        time.sleep(0.01)
    assert broken.process.pid == pid and web.process.poll() is None


def test_stopping_ends_every_process(supervisor_of):
    children = [stack.Child(label, SLEEPER) for label in ("Celery worker", "Celery beat", "web server")]
    supervisor = supervisor_of(children)
    supervisor.stop()
    assert all(child.process.poll() is not None for child in children)


def test_several_web_processes_and_workers_share_the_cores_out(monkeypatch, tmp_path):
    monkeypatch.setenv("WEB_WORKERS", "2")
    monkeypatch.setenv("CELERY_WORKERS", "2")
    monkeypatch.setenv("EMBEDDING_TORCH_THREADS", "")  # recorded, so that what app_children sets is undone
    monkeypatch.delenv("EMBEDDING_TORCH_THREADS")
    monkeypatch.setattr(stack.os, "cpu_count", lambda: 16)
    children = stack.app_children("127.0.0.1", "8000", dev=False, state=tmp_path, log=tmp_path / "log")
    labels = [child.label for child in children]
    assert labels == ["Celery worker 1", "Celery worker 2", "Celery beat", "web server"]
    web = children[-1].command
    assert web[web.index("--workers") + 1] == "2"
    assert {child.command[child.command.index("--hostname") + 1] for child in children[:2]} == {"dev1@%h", "dev2@%h"}
    # Each process runs one forward at a time: 16 cores over 2 web processes and 2 workers.
    assert os.environ["EMBEDDING_TORCH_THREADS"] == "4"
    assert stack.torch_threads(web=2, workers=1) == 5
    monkeypatch.setattr(stack.os, "cpu_count", lambda: 2)
    assert stack.torch_threads(web=2, workers=1) == 1
