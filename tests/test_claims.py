"""Claims are generated, not typed: every measured number quoted in README.md and docs/method.md is in a results file
(`benchmarks/results/*`, or the demo model's training record `prune_engine/assets/*.json`).

A quoted number is one with a decimal point (44.82, 0.5, −30.9%) or a percentage; it is found when
some number of `benchmarks/results/*.md|json` (the files of this commit) gives it when rounded to
the quoted number of decimals (ppl 44.8241 -> "44.82"; an accuracy 0.8927 -> "89.3%" is matched as
a percentage too). Settings (0.5, 0.10) pass because the results files record their settings.
Numbers quoted from outside this project (the paper, EvoPress) sit on a line that names the source
(`ANCHORS`, "the paper reports", "EvoPress"), and are left out.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/method.md")
# a decimal number, optionally signed, or an integer percentage (thousands separators allowed)
QUOTED = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?(?![\w])")
OUTSIDE = re.compile(r"ANCHORS|the paper reports|EvoPress|paper's Table|\bOWL paper\b", re.IGNORECASE)


def _numbers(text: str) -> list[float]:
    return [float(m.group(0).replace(",", "")) for m in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]


def results_values() -> set[str]:
    """Every number of the results files, as the strings it rounds to (0 to 4 decimals; and x100 for shares)."""
    out: set[str] = set()
    files = sorted((ROOT / "benchmarks" / "results").glob("*")) + sorted((ROOT / "prune_engine" / "assets").glob("*"))
    for path in files:  # the benchmarks' results, and the demo model's training record
        if path.suffix == ".json":
            text = json.dumps(json.loads(path.read_text()))
        elif path.suffix == ".md":
            text = path.read_text()
        else:
            continue
        for v in _numbers(text):
            for scaled in (v, 100 * v, -v, -100 * v):
                for k in range(5):
                    out.add(f"{scaled:.{k}f}")
    return out


def quoted_numbers(text: str) -> list[tuple[int, str]]:
    """(line number, number as quoted) of the measured-looking numbers of a document (decimals, percentages)."""
    found = []
    in_code = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or OUTSIDE.search(line):
            continue
        for m in QUOTED.finditer(line):
            whole, frac, pct = m.group(1).replace(",", ""), m.group(2) or "", m.group(3)
            if frac or pct:
                found.append((i, whole + frac))
    return found


def test_the_number_reader_finds_decimals_and_percentages_only():
    text = "ppl 44.82 (−30.9%), 1,000 questions, 12 % of 3 runs, v2.13.0, 64×256, 0.5\n```\n9.99\n```\nEvoPress 28.8"
    assert [n for _, n in quoted_numbers(text)] == ["44.82", "30.9", "12", "0.5"]
    values = results_values()
    assert "0.5" in values


@pytest.mark.parametrize("doc", DOCS)
def test_every_quoted_number_is_in_a_results_file(doc):
    values = results_values()
    missing = [f"{doc}:{line}: {n}" for line, n in quoted_numbers((ROOT / doc).read_text()) if n not in values]
    assert not missing, ("numbers quoted without a results file behind them (re-run the benchmark, or quote "
                         "what benchmarks/results holds): " + "; ".join(missing[:30]))
