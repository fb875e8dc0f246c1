"""The ablation's record of a search's re-rank (benchmarks.variants.rerank_record) on a synthetic history."""
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.variants import rerank_record


def test_rerank_record_pairs_each_export_prune_with_the_search_score(tmp_path):
    base = dict(generation=1, policy=[2, 2], mean_sparsity=0.7, g=-0.1, l_text=2.0, l_mm=1.0)
    rows = [dict(base, candidate=m, fidelity="full", fitness=-1.0 - m, l_proxy=1.0 + m) for m in range(3)]
    rows += [dict(base, candidate=0, fidelity="screen", fitness=-9.0, l_proxy=9.0)]  # not a search score
    rows += [dict(base, candidate=1, fidelity="export", fitness=-1.5, l_proxy=1.5, l_text=2.5),
             dict(base, candidate=0, fidelity="export", fitness=-1.7, l_proxy=1.7),
             dict(base, candidate=-1, fidelity="export", fitness=float("nan"), l_proxy=float("nan"), l_mm=None)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "history.parquet")
    rec = rerank_record(tmp_path)
    assert [r["candidate"] for r in rec] == [1, 0, -1]  # the history's order
    assert [r["search_fitness"] for r in rec[:2]] == [-2.0, -1.0] and rec[2]["search_fitness"] is None
    assert rec[0]["fitness"] == -1.5 and rec[0]["l_text"] == 2.5 and rec[2]["l_mm"] is None


def test_rerank_record_is_empty_without_a_rerank(tmp_path):
    rows = [dict(generation=0, candidate=0, policy=[2], mean_sparsity=0.7, fidelity="full", fitness=-1.0, l_proxy=1.0, g=0.0,
                 l_text=1.0, l_mm=1.0)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "history.parquet")
    assert rerank_record(tmp_path) == []
