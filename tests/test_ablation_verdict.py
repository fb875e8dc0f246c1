"""benchmarks/ablation.py's verdict on the paper's ordering (Full ahead of every ablated variant)."""
from __future__ import annotations

from benchmarks.ablation import ordering


def _run(seed=0, ppl=100.0, easy=0.5, fashion=0.4):
    return {"seed": seed, "ppl": ppl, "easy_vqa": easy, "fashion_mnist": fashion}


def test_ordering_holds_only_when_full_is_ahead_on_every_metric():
    full = {"ppl_sd": 5.0, "easy_vqa_sd": 0.02, "fashion_mnist_sd": 0.02}
    first = {"full": _run(), "auto_wo_gen": _run(ppl=120.0, easy=0.45, fashion=0.39),
             "no_evo": _run(ppl=130.0, easy=0.40, fashion=0.30)}
    text = ordering(0.7, first, full)
    assert "holds on every metric" in text and "Full behind" not in text
    assert "fashion_mnist Full ahead (within sd)" in text  # 0.01 < sd 0.02
    first["evo_wo_ub"] = _run(ppl=90.0, easy=0.55, fashion=0.39)
    text = ordering(0.7, first, full)
    assert "does not hold on every metric" in text
    assert "Evo w/o UB (c_m equal): ppl Full behind, easy_vqa Full behind, fashion_mnist Full ahead (within sd)" in text
    assert ordering(0.5, {"full": _run()}, full) == "At 0.5: no ablated variant to order."
