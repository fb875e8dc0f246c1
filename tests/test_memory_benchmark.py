"""benchmarks/memory.py runs with torch and transformers alone (what a bare GPU machine has) and measures every phase."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# importing any of these fails in the child: the script must not need them
ABSENT = ["pydantic", "ray", "datasets", "typer", "rich", "pyarrow", "actors", "search"]


def test_memory_benchmark_needs_only_torch_and_transformers(tmp_path):
    code = (f"import sys, runpy\n"
            f"for name in {ABSENT!r}: sys.modules[name] = None\n"
            f"sys.argv = ['memory.py', '--child', 'tiny/disk', '--text-samples', '2', '--seqlen', '16',"
            f" '--mm-samples', '2']\n"
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'memory.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["size"] == "tiny" and row["store"] == "disk" and row["database_entries"] == 2 * 7 * 5
    assert set(row["phases"]) == {"setup (block-0 inputs, dense copies)", "sequential prune", "database build",
                                  "stitched candidate", "projector gradient, one pass",
                                  "projector gradient, micro-batch 1 + checkpointing"}
    assert all(p["seconds"] > 0 and p["peak"] > 0 for p in row["phases"].values())
    assert row["model_bytes"] > 0 and not list(tmp_path.glob("memory-bench-*"))  # the spill directory is gone
