"""docs/cluster.md on a fresh `ray start --head` with token authentication: submit the search through Ray's
HTTP job API, read its log, the actors' per-candidate lines and the custom metrics; the run name survives resume."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ray_helpers import free_port

pytestmark = pytest.mark.ray

RAY = Path(sys.executable).with_name("ray")


def _request(url: str, token: str | None = None, data: dict | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers,
                                 method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _kill_cluster(temp_dir: str, head: subprocess.Popen) -> None:
    """Stop only this cluster: its `ray start --block` process group, then any process naming its temp dir."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=5)  # what has not stopped by then is killed below
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for _ in range(2):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if temp_dir.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        time.sleep(1)


def _distinct_free_ports(names) -> dict[str, int]:
    """A free port per name, no two alike (Ray refuses a port two components share)."""
    ports: dict[str, int] = {}
    for name in names:
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    return ports


def _worker_range_clear_of(ports, width: int) -> int:
    """The first port of a random worker port range [base, base + width] that holds none of `ports`: Ray refuses
    a component port inside the worker range, and free ports come from the kernel's ephemeral range (32768-60999
    on Linux), which a range drawn from 20000-40000 overlapped now and then."""
    while True:
        base = 10000 + secrets.randbelow(50000)
        if not any(base <= p <= base + width for p in ports):
            return base


@pytest.fixture(scope="module")
def head_node():
    """A head node with token authentication on, on its own ports and temp dir (no other cluster is touched)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must stay short
    token_file = Path(temp_dir) / "token"
    token = secrets.token_hex(32)
    token_file.write_text(token)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               RAY_metrics_report_interval_ms="1000")
    env.pop("RAY_ADDRESS", None)
    ports = _distinct_free_ports(("port", "dashboard-port", "metrics-export-port", "node-manager-port",
                                  "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                  "runtime-env-agent-port", "ray-client-server-port"))
    worker_ports = 200
    worker_base = _worker_range_clear_of(ports.values(), width=worker_ports)
    args = [str(RAY), "start", "--head", "--block", "--num-cpus", "2", f"--temp-dir={temp_dir}",
            "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
            f"--min-worker-port={worker_base}", f"--max-worker-port={worker_base + worker_ports}",
            *[f"--{name}={port}" for name, port in ports.items()]]
    start_log = Path(temp_dir) / "ray-start.log"
    with start_log.open("w") as log:
        head = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if head.poll() is not None:
                last = start_log.read_text(errors="replace").strip().splitlines()[-3:]
                pytest.fail(f"ray start exited with {head.returncode}: {' | '.join(last)}")
            try:
                if _request(f"{dashboard}/api/version", token)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the head node's dashboard did not come up")
        yield {"dashboard": dashboard, "token": token, "metrics_port": ports["metrics-export-port"],
               "temp_dir": temp_dir}
    finally:
        _kill_cluster(temp_dir, head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _actor_logs(head) -> list[str]:
    files = {p.resolve() for p in Path(head["temp_dir"]).glob("session_*/logs/worker-*.out")}  # session_latest: a link
    return [p.read_text(errors="replace") for p in files]


def _submit(head, entrypoint: str) -> str:
    code, body = _request(f"{head['dashboard']}/api/jobs/", head["token"], {"entrypoint": entrypoint})
    assert code == 200, body
    return json.loads(body)["submission_id"]


def _wait(head, job: str, timeout_s: float = 300, on_poll=None) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = json.loads(_request(f"{head['dashboard']}/api/jobs/{job}", head["token"])[1])
        if on_poll is not None:
            on_poll()
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return info
        time.sleep(1)
    pytest.fail(f"job {job} did not finish in {timeout_s} s")


def test_search_submitted_as_a_job_with_token_auth(head_node, tiny_llava_dir, tmp_path):
    head = head_node
    # without the token the job API (and the dashboard) refuse
    assert _request(f"{head['dashboard']}/api/jobs/")[0] == 401
    out = tmp_path / "run"
    search = (f"{sys.executable} -m actors.cli search --address auto --model {tiny_llava_dir} "
              f"--out {out} --target 0.5 --population 4 --generations 2 --mm-calib easy-vqa:train --actors 1 "
              "--nsamples 4 --seqlen 32 --mm-samples 4 --no-progress")
    job = _submit(head, search)
    metrics_seen: dict[str, str] = {}

    def scrape():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{head['metrics_port']}/metrics", timeout=5).read().decode()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("ray_efficientllava_candidates_evaluated_total"):
                metrics_seen["evaluated"] = line

    info = _wait(head, job, on_poll=scrape)
    log = json.loads(_request(f"{head['dashboard']}/api/jobs/{job}/logs", head["token"])[1])["logs"]
    assert info["status"] == "SUCCEEDED", log
    assert "generation 2/" in log and "best F" in log and "saved" in log  # the progress is in the job's log
    assert "\x1b[" not in log and "core_worker.cc" not in log and "Token authentication" not in log
    assert "evaluator 0: candidate" not in log  # those stay in the actor's own log:
    actor_logs = _actor_logs(head)
    assert any(re.search(r"\] evaluator 0: candidate \d+ \(projector v\d+, (full|screen)\): L_text", t) for t in actor_logs)
    run_name = (out / "run_name.txt").read_text().strip()
    assert 'run="' + run_name + '"' in metrics_seen.get("evaluated", ""), metrics_seen  # counters end in _total

    # resume under a new job: the run name (actor names, run= tag) is the stored one
    job2 = _submit(head, f"{sys.executable} -m actors.cli resume {out} --address auto --generations 3 "
                         "--no-progress")
    info2 = _wait(head, job2)
    log2 = json.loads(_request(f"{head['dashboard']}/api/jobs/{job2}/logs", head["token"])[1])["logs"]
    assert info2["status"] == "SUCCEEDED", log2
    assert "resuming" in log2 and (out / "run_name.txt").read_text().strip() == run_name
    actor_logs = _actor_logs(head)
    assert sum(f"[{run_name}] evaluator 0: candidate 1 " in t for t in actor_logs) == 2  # both jobs' actors


def test_interrupted_search_says_how_to_resume(tiny_llava_dir, tmp_path):
    """SIGTERM (and Ctrl-C, the same path) mid-search: exit 130, one line naming the resume command, no stack dump."""
    out = tmp_path / "run"
    env = dict(os.environ, RAY_metrics_report_interval_ms="1000")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "efficientllava.actors.cli", "search", "--model", str(tiny_llava_dir),
                             "--out", str(out), "--population", "4", "--generations", "50", "--actors", "1",
                             "--preset", "none",
                             "--num-cpus", "1", "--nsamples", "4", "--seqlen", "32", "--no-progress",
                             "--set", "ray.dashboard=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("generation 1/"):  # the first checkpoint is written
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert f"interrupted; continue with `efficientllava resume {out}`" in output
    assert "Traceback" not in output and "*** SIGTERM received" not in output and "core_worker" not in output
    assert (out / "state.json").exists()
