"""One decoder block's working set W, from the model's shapes: what the device holds beyond the weights while a block is pruned or scored (benchmarks/memory.py measures against it, actors/cluster_plan.py predicts with it)."""
from __future__ import annotations


def block_working_set(text: dict, levels: int) -> int:
    """W: one block's working set from the shapes: the larger of what SparseGPT holds for the block's largest
    stage (the fp32 row stack at `levels` levels, twice, a boolean mask, three fp32 copies of the stage's
    Hessian) and what the loss holds for one chunk of 512 targets (three fp32 arrays over the vocabulary)."""
    hidden, inter = text["hidden_size"], text["intermediate_size"]
    kv = 2 * text["num_key_value_heads"] * (hidden // text["num_attention_heads"])
    stages = [(hidden + kv, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)]  # qkv, o, gate/up, down
    sparsegpt = max(rows * levels * cols * (4 + 4 + 1) + 3 * 4 * cols * cols for rows, cols in stages)
    return max(sparsegpt, 3 * 512 * text["vocab_size"] * 4)
