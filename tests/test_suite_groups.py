"""The suite's own rule for two xdist workers (tests/conftest.py): the tests that kill or signal processes
share one group, so no two of them run at once, and the rule finds them from the files themselves."""

from __future__ import annotations

from pathlib import Path

from conftest import interrupting_tests, top_level_blocks

TESTS = Path(__file__).parent


def test_the_kill_and_signal_tests_are_grouped_and_a_plain_one_is_not():
    grouped = interrupting_tests(TESTS)
    for test in [("test_reliability", "test_driver_sigkill_then_ctrl_c_then_resume"),  # os.kill in its body
                 ("test_signals", "test_sigterm_and_sigusr1_save_and_stop_then_the_same_command_continues"),  # a helper
                 ("test_api", "test_trials_dataframe_and_history"),  # a module fixture that sends SIGINT
                 ("test_s3", "test_driver_kill_then_resume_on_s3"),
                 ("test_slurm", "test_time_limit_warning_requeues_and_the_requeued_job_resumes"),  # tests/slurm.py
                 ("test_node_loss", "test_worker_node_killed_mid_sweep")]:
        assert test in grouped, test
    assert ("test_reliability", "test_database_password_never_shown") not in grouped
    assert not any(stem == "test_config" for stem, _ in grouped)


def test_a_new_test_that_sends_a_signal_joins_the_group(tmp_path):
    (tmp_path / "cluster.py").write_text("import os, signal\n\ndef stop(pid):\n    os.kill(pid, signal.SIGTERM)\n")
    (tmp_path / "test_new.py").write_text(
        "import signal\nimport cluster\n\n\ndef _halt(proc):\n    proc.send_signal(signal.SIGINT)\n\n\n"
        "def test_direct(proc):\n    proc.kill()\n\n\ndef test_through_a_function(proc):\n    _halt(proc)\n\n\n"
        "def test_through_a_helper_module():\n    cluster.stop(1)\n\n\ndef test_plain():\n    assert 1\n")
    assert interrupting_tests(tmp_path) == {("test_new", "test_direct"), ("test_new", "test_through_a_function"),
                                            ("test_new", "test_through_a_helper_module")}
    assert list(top_level_blocks("def a():\n    pass\n\n\nasync def b():\n    pass\n")) == ["a", "b"]


class _Item:
    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive

    def get_closest_marker(self, name: str):
        return object() if name == "exclusive" and self.exclusive else None


def test_an_exclusive_test_waits_for_the_running_one_and_holds_back_the_next(monkeypatch, tmp_path):
    import tempfile
    import threading
    import time

    from conftest import _turn

    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", f"selftest{time.time_ns()}")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    events: list[str] = []
    release_first = threading.Event()

    def run(name: str, exclusive: bool, hold: threading.Event | None = None) -> None:
        with _turn(_Item(exclusive)):
            events.append(f"{name} in")
            if hold is not None:
                hold.wait(10)
            else:
                time.sleep(0.3)
            events.append(f"{name} out")

    first = threading.Thread(target=run, args=("plain", False, release_first))
    first.start()
    while "plain in" not in events:
        time.sleep(0.01)
    alone = threading.Thread(target=run, args=("exclusive", True))
    alone.start()
    time.sleep(0.3)  # the exclusive test now holds the turnstile and waits for the plain one
    nxt = threading.Thread(target=run, args=("next", False))
    nxt.start()
    time.sleep(0.3)
    assert events == ["plain in"], events  # neither has started beside the running test
    release_first.set()
    for t in (first, alone, nxt):
        t.join(10)
    assert events == ["plain in", "plain out", "exclusive in", "exclusive out", "next in", "next out"], events
