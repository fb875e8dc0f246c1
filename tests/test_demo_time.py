"""benchmarks/demo_time's table: every held-out column the demo reports, in distribution and shifted."""
from benchmarks.demo_time import paired_columns


def test_paired_columns_pairs_uniform_with_searched_for_every_shared_column():
    rows = {"uniform": {"sparsity": 0.5, "ppl": 36.004, "ppl_pydoc": 50.5, "easy_vqa": 0.9071,
                        "easy_vqa_rephrased": 0.8, "fashion_mnist": 0.7671, "fashion_mnist_rephrased": 0.7},
            "searched": {"sparsity": 0.5, "ppl": 35.681, "ppl_pydoc": 49.25, "easy_vqa": 0.9272,
                         "easy_vqa_rephrased": 0.81, "fashion_mnist": 0.78, "fashion_mnist_rephrased": 0.69}}
    cols = dict(paired_columns(rows))
    assert list(cols) == ["ppl (Wikipedia): uniform / searched", "ppl (Python docs, shifted): uniform / searched",
                          "easy-vqa acc: uniform / searched", "easy-vqa rephrased (shifted): uniform / searched",
                          "Fashion-MNIST acc: uniform / searched",
                          "Fashion-MNIST rephrased (shifted): uniform / searched"]
    assert cols["ppl (Wikipedia): uniform / searched"] == "36.00 / 35.68"
    assert cols["easy-vqa acc: uniform / searched"] == "0.907 / 0.927"
    assert cols["Fashion-MNIST rephrased (shifted): uniform / searched"] == "0.700 / 0.690"


def test_paired_columns_leaves_out_a_column_one_model_lacks():
    rows = {"uniform": {"ppl": 30.0, "ppl_pydoc": 40.0}, "searched": {"ppl": 29.0}}
    assert paired_columns(rows) == [("ppl (Wikipedia): uniform / searched", "30.00 / 29.00")]
