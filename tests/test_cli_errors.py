"""Bad input on every command: one `error:` line naming the problem, exit code 2, within seconds, nothing written."""
import json
import time

import pytest
from typer.testing import CliRunner

from efficientllava.actors.cli import app


def _file(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _orphaned_run(tmp):
    """A run whose state.json was deleted: config and generation files are left."""
    run = tmp / "run"
    _file(run / "config.yaml", "population: 4\n")
    _file(run / "history-000002.parquet", "parquet bytes")
    _file(run / "projector-000002.bin", "projector bytes")
    _file(run / "committed.txt", "2\n")


def _corrupt_run(tmp):
    _orphaned_run(tmp)
    _file(tmp / "run" / "state.json", "{not json")


def _no_local_cluster(monkeypatch):
    import ray._private.services as services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)


def _policy(tmp):
    _file(tmp / "policy.json", json.dumps({"ratios": [0.5, 0.5, 0.5]}))


def _finished_run(tmp):
    """Enough of a finished run for `report` (its check of --out comes first)."""
    _file(tmp / "run" / "policy.json", json.dumps({"model": "x"}))
    _file(tmp / "run" / "history.parquet", "")


# (id, command line with {llama} {llava} {tmp} placeholders, setup(tmp), message part)
CASES = [
    # devices, models and paths
    ("prune-cuda", "prune --model {llama} --out {tmp}/o --device cuda", None, "CUDA is not available"),
    ("ppl-cuda", "eval ppl --model {llama} --device cuda", None, "CUDA is not available"),
    ("ppl-bad-device", "eval ppl --model {llama} --device tpu9", None, "--device tpu9"),
    ("vqa-text-only", "eval vqa --model {llama}", None, "text-only"),
    ("mistyped-relative", "prune --model models/tiny-lama --out {tmp}/o", "models_dir", "no such directory"),
    ("mistyped-dot", "eval ppl --model ./models/tiny-lama", None, "no such directory"),
    ("search-mistyped", "search --model models/tiny-lama --out {tmp}/o", "models_dir", "no such directory"),
    ("file-as-model", "eval ppl --model {tmp}/policy.json", _policy, "not a model directory"),
    # outputs
    ("prune-out-under-file", "prune --model {llama} --out {tmp}/policy.json/x", _policy, "is a file"),
    ("prune-out-is-file", "prune --model {llama} --out {tmp}/policy.json --overwrite", _policy, "a file is in the way"),
    ("ppl-json-under-file", "eval ppl --model {llama} --json {tmp}/policy.json/r.json", _policy, "is a file"),
    ("vqa-json-is-dir", "eval vqa --model {llava} --json {tmp}", None, "a directory"),
    ("report-out-is-file", "report {tmp}/run --out {tmp}/policy.json", lambda t: (_policy(t), _finished_run(t)),
     "a file is in the way"),
    ("search-out-under-file", "search --model {llava} --out {tmp}/policy.json/run", _policy, "is a file"),
    # sizes and option conflicts
    ("ppl-seqlen-context", "eval ppl --model {llama} --seqlen 100000", None, "beyond the model's context"),
    ("ppl-memory", "eval ppl --model {llama} --seqlen 512 --nsamples 100000 --batch-size 100000", None,
     "lower --batch-size"),
    ("ppl-batch-0", "eval ppl --model {llama} --batch-size 0", None, "--batch-size must be a positive integer"),
    ("ppl-nsamples-0", "eval ppl --model {llama} --nsamples 0", None, "--nsamples must be a positive integer"),
    ("vqa-batch-0", "eval vqa --model {llava} --batch-size 0", None, "--batch-size must be a positive integer"),
    ("prune-batch-0", "prune --model {llama} --out {tmp}/o --batch-size 0", None, "--batch-size must be"),
    ("prune-seqlen-context", "prune --model {llama} --out {tmp}/o --seqlen 4096", None, "beyond the model's context"),
    ("search-too-little-text", "search --model {llava} --out {tmp}/o --calib {tmp}/short.txt --nsamples 64",
     lambda t: _file(t / "short.txt", "a few words only"), "too little text"),
    ("search-seqlen-context", "search --model {llava} --out {tmp}/o --seqlen 4096", None, "beyond the model's context"),
    ("sparsity-with-pattern", "prune --model {llama} --out {tmp}/o --sparsity 0.5 --pattern 2:4", None,
     "--sparsity conflicts with --pattern"),
    ("sparsity-with-policy", "prune --model {llama} --out {tmp}/o --sparsity 0.6 --policy {tmp}/policy.json",
     _policy, "--sparsity conflicts with --policy"),
    ("nm-divisibility", "prune --model {llama} --out {tmp}/o --pattern 3:5", None, "multiple of 5"),
    ("policy-length", "prune --model {llama} --out {tmp}/o --policy {tmp}/p2.json",
     lambda t: _file(t / "p2.json", json.dumps({"ratios": [0.5, 0.5]})), "3 decoder blocks"),
    ("elites-vs-population", "search --model {llava} --out {tmp}/o --population 4 --elites 4", None, "elites"),
    ("tune-metric-text-only", "tune --model {llama} --metric easy_vqa --storage {tmp}/tune", None,
     "needs a LLaVA model"),
    ("calib-eval-split", "search --model {llava} --out {tmp}/o --mm-calib easy-vqa:test", None,
     "is an evaluation split"),
    ("calib-local-file-eval-split", "search --model {llava} --out {tmp}/o --mm-calib scienceqa:{tmp}/sqa.parquet@Test",
     lambda t: _file(t / "sqa.parquet"), "is an evaluation split (Test)"),
    ("calib-local-file-default-split", "prune --model {llava} --out {tmp}/o --mm-calib vizwiz:{tmp}/vizwiz.parquet",
     lambda t: _file(t / "vizwiz.parquet"), "is an evaluation split (vizwiz's default for a file without @split"),
    ("calib-wiki-eval", "prune --model {llama} --out {tmp}/o --calib wiki:eval", None, "held-out Wikipedia"),
    ("mm-balance-without-mm-calib", "prune --model {llama} --out {tmp}/o --mm-balance", None, "needs mm_calib"),
    ("vqa-missing-local-file", "eval vqa --model {llava} --data scienceqa:{tmp}/missing.parquet", None,
     "data file not found"),
    ("report-benchmarks-conflict", "report {tmp}/run --benchmarks {tmp} --no-benchmarks", _finished_run, "conflicts"),
    # Ray addresses: checked in seconds, before ray.init
    ("address-refused", "search --model {llava} --out {tmp}/o --address 127.0.0.1:1", None, "no Ray cluster answers"),
    ("population-4-default-elites", "search --model {llava} --out {tmp}/o --population 4 --address 127.0.0.1:1",
     None, "no Ray cluster answers"),  # the population is accepted: only the address fails
    ("address-auto-none", "search --model {llava} --out {tmp}/o --address auto", "no_cluster", "no running Ray cluster"),
    ("address-malformed", "search --model {llava} --out {tmp}/o --address nowhere", None, "expected 'auto'"),
    # resume never restarts over a run whose commit record is lost
    ("resume-state-deleted", "resume {tmp}/run", _orphaned_run, "state.json is missing"),
    ("resume-state-corrupt", "resume {tmp}/run", _corrupt_run, "corrupt"),
    ("search-over-orphans", "search --model {llava} --out {tmp}/run", _orphaned_run, "efficientllava resume"),
]


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.mark.parametrize("command, setup, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(command, setup, message, tiny_llama_dir, tiny_llava_dir,
                                                   tmp_path, monkeypatch):
    import ray

    if setup == "models_dir":
        (tmp_path / "models").mkdir()
        monkeypatch.chdir(tmp_path)
    elif setup == "no_cluster":
        _no_local_cluster(monkeypatch)
    elif setup is not None:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    args = command.format(llama=tiny_llama_dir, llava=tiny_llava_dir, tmp=tmp_path).split()
    t0 = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - t0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert _snapshot(tmp_path) == before  # nothing written, nothing deleted
    assert not ray.is_initialized()
