"""Acceptance (c): SIGKILL the driver in the middle of generation 4 (or while it writes
a checkpoint), resume, and get bit-for-bit the result of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_search_synthetic import resume_config, resume_evaluator

from efficientllava.search import SearchDriver
from efficientllava.search.checkpoint import RunStore

HELPER = Path(__file__).with_name("test_search_synthetic.py")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    result = SearchDriver(resume_config(), resume_evaluator(), str(run_dir)).run()
    return run_dir, result


def _run_until_ready(run_dir: Path, *args: str) -> subprocess.Popen:
    """Start the helper and return once it prints READY (it is then parked or dead)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen([sys.executable, str(HELPER), str(run_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "READY":
            return proc
    proc.wait(timeout=30)
    raise AssertionError(f"helper ended without READY: {lines} {proc.stderr.read()}")


def _saved(run_dir: Path) -> dict:
    state, history, projector = RunStore(str(run_dir)).load()
    state.pop("elapsed_s")  # wall time differs between runs, everything else must not
    return dict(state=state, history=history, projector=projector)


def _assert_same_as_reference(result, run_dir, reference):
    ref_dir, ref = reference
    assert np.array_equal(result.policy, ref.policy)
    assert result.fitness == ref.fitness  # bit for bit
    assert result.history.equals(ref.history)
    assert result.history.num_rows == 7 * 16
    mine, theirs = _saved(run_dir), _saved(ref_dir)
    assert mine["state"] == theirs["state"]  # population, RNG state, projector version, best, config
    assert mine["history"].equals(theirs["history"]) and mine["projector"] == theirs["projector"]


def test_sigkill_mid_generation_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = _run_until_ready(run_dir, "--block-at-generation", "4")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    state, history, _ = RunStore(str(run_dir)).load()
    assert state["generation"] == 4 and history.num_rows == 4 * 16  # generations 0-3 committed
    ev = resume_evaluator()
    result = SearchDriver.resume(str(run_dir), ev).run()
    assert len(ev.steps) == 3  # only generations 4, 5, 6 ran again
    _assert_same_as_reference(result, run_dir, reference)


def test_sigkill_during_checkpoint_write_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = _run_until_ready(run_dir, "--die-in-checkpoint", "4")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    names = sorted(os.listdir(run_dir))
    assert any(".tmp-" in n for n in names), names  # state.json of generation 4 was half-way
    assert "history-000005.parquet" in names  # its data files were already in place
    state, _, _ = RunStore(str(run_dir)).load()
    assert state["generation"] == 4  # ... but the commit point still names generation 3's checkpoint
    done = subprocess.run([sys.executable, str(HELPER), str(run_dir), "--resume"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ref_dir, ref = reference
    assert done.stdout.strip().splitlines()[-1] == f"DONE {ref.fitness!r}"
    assert not any(".tmp-" in n for n in os.listdir(run_dir))  # stale temp files cleaned up
    result = SearchDriver.resume(str(run_dir), resume_evaluator()).run()  # finished: no new work
    _assert_same_as_reference(result, run_dir, reference)
