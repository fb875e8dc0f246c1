"""benchmarks/reprune_rounding.py's mask comparison, against hand-built weights."""
import pytest
import torch

from benchmarks.reprune_rounding import compare_masks, pruning_order


def _name(block: int, matrix: str) -> str:
    part = "self_attn" if matrix in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"model.language_model.layers.{block}.{part}.{matrix}.weight"


def test_pruning_order_is_block_then_stage():
    names = [_name(b, m) for b in (10, 2) for m in ("down_proj", "q_proj", "o_proj", "k_proj")]
    names.append("model.multi_modal_projector.linear_1.weight")  # never pruned: left out
    names.append("model.vision_tower.encoder.layers.0.self_attn.q_proj.weight")  # the vision tower's: left out
    assert pruning_order(names) == [_name(2, "q_proj"), _name(2, "k_proj"), _name(2, "o_proj"), _name(2, "down_proj"),
                                    _name(10, "q_proj"), _name(10, "k_proj"), _name(10, "o_proj"),
                                    _name(10, "down_proj")]


def test_compare_masks_finds_the_first_differing_matrix_in_pruning_order():
    g = torch.Generator().manual_seed(0)
    export = {_name(b, m): torch.randn(4, 4, generator=g) for b in (0, 1) for m in ("q_proj", "o_proj")}
    for w in export.values():
        w[0, :2] = 0.0  # 2 of 16 zeros each
    again = {n: w.clone() for n, w in export.items()}
    again[_name(0, "q_proj")][3, 3] += 1e-5  # same mask, weights apart
    again[_name(1, "q_proj")][1, 1] = 0.0  # one more zero: the mask differs here first
    again[_name(0, "o_proj")][2, 2] += 0.5  # block 0 (before the first differing mask)
    out = compare_masks(export, again)
    assert out["matrices"] == 4 and out["same_mask"] == 3
    assert out["first_differing"] == _name(1, "q_proj")
    assert out["max_weight_diff_before"] == pytest.approx(0.5)
    assert out["mask_agreement"] == pytest.approx(1 - 1 / 64)
