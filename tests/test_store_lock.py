"""One active governor per embedded store file: a second one refuses (naming the holder's pid)
unless it is a read-only viewer; the lock goes with its holder, however the holder ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from safety_governor.config import Settings
from safety_governor.errors import ConfigError
from safety_governor.service.runtime import Options, Runtime
from safety_governor.service.store_lock import StoreLock, lock_path

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_lock_on_the_same_store_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    store = tmp_path / "governor.db"
    first = StoreLock(store)
    with pytest.raises(ConfigError, match=f"in use by another governor: pid {os.getpid()} .*--read-only"):
        StoreLock(store)
    first.close()
    StoreLock(store).close()  # released: the next one takes it


def test_a_second_service_on_the_same_store_refuses_to_start_but_a_read_only_viewer_runs(tmp_path: Path) -> None:
    settings = Settings(output_dir=tmp_path)
    options = Options(storyline="none", prefill_seconds=5)
    first = Runtime.build(settings, options)
    try:
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            Runtime.build(settings, options)
        viewer = Runtime.build(settings, Options(storyline="none", read_only=True))
        try:
            assert [w.name for w in viewer.workers] == ["governor-logs"]
            assert viewer.world is None
        finally:
            viewer.close()
    finally:
        first.close()
    Runtime.build(settings, options).close()


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock_and_serve_on_a_held_store_exits_2_naming_the_pid(
        tmp_path: Path) -> None:
    env = {**os.environ, "GOVERNOR_OUTPUT_DIR": str(tmp_path)}
    env.pop("GOVERNOR_STORE_PATH", None)
    holder = subprocess.Popen([sys.executable, "-m", "safety_governor", "serve", "--storyline", "none"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout is not None and "headless" in holder.stdout.readline()  # started, lock taken
        second = subprocess.run([sys.executable, "-m", "safety_governor", "serve", "--duration", "1"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"in use by another governor: pid {holder.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert lock_path(tmp_path / "governor.db").exists()
    StoreLock(tmp_path / "governor.db").close()  # the kernel dropped the dead holder's lock
