"""Constrained-choice accuracy against a brute-force reference on a tiny random LLaVA."""
from __future__ import annotations

import json

import pytest
import torch

from efficientllava.prune_engine.models import smol_llava as demo_model
from efficientllava.prune_engine.data.vqa import VQASample, collate_vqa, load_easy_vqa, load_fashion_mnist
from efficientllava.prune_engine.evaluation.vqa import choice_logliks, vqa_accuracy

TINY_ARCH = {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random LLaVA (SmolLM2 tokenizer), saved with save_pretrained and loaded back."""
    import shutil

    from transformers import AutoProcessor, LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    torch.manual_seed(0)
    lm_dir = tmp_path_factory.mktemp("tiny_lm")
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(lm_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(embedded_smollm2_dir() / name, lm_dir / name)
    model, processor = demo_model.build_demo_model(None, arch=TINY_ARCH, lm_dir=lm_dir)
    with torch.no_grad():  # sharpen the random LM so that choices get clearly different scores
        model.model.language_model.embed_tokens.weight.mul_(30)
    out = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return LlavaForConditionalGeneration.from_pretrained(out).eval(), AutoProcessor.from_pretrained(out)


@pytest.fixture(scope="module")
def samples():
    uneven = VQASample(image=load_fashion_mnist("test", limit=1, seed=9)[0].image, question="Which?",
                       answer="Ankle boot", choices=("no", "Ankle boot", "T-shirt/top", "Bag"), category="odd")
    return (load_easy_vqa("test", limit=6, seed=4) + load_fashion_mnist("test", limit=5, seed=4) + [uneven])


def brute_force(model, processor, sample):
    """Per choice: one full forward of prompt + choice, summed log-probs of the choice's tokens."""
    import dataclasses

    out = []
    for choice in sample.choices:
        batch = collate_vqa(processor, [dataclasses.replace(sample, answer=choice)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                                           attention_mask=batch["attention_mask"]).logits[0].float(), -1)
        labels = batch["labels"][0]
        positions = (labels != -100).nonzero().flatten()[:-1]  # the choice's tokens, not the end-of-turn
        out.append(sum(logp[p - 1, labels[p]].item() for p in positions))
    return out


def test_choice_logliks_match_brute_force(tiny, samples):
    model, processor = tiny
    fast = choice_logliks(model, processor, samples)
    for sample, got in zip(samples, fast):
        ref = brute_force(model, processor, sample)
        assert len(got) == len(sample.choices)
        torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-4, atol=1e-4)


def test_choice_scoring_passes_the_cache_under_the_name_transformers_takes(tiny, samples):
    """transformers 5.2x renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40): the cached
    continuation must use the installed version's name, so no deprecation notice about it may appear."""
    import warnings

    model, processor = tiny
    assert any(len(c) > 1 for s in samples for c in s.choices)  # the continuation forward runs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice_logliks(model, processor, samples)
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]


def test_vqa_accuracy_matches_reference_and_is_json(tiny, samples):
    model, processor = tiny
    result = vqa_accuracy(model, processor, samples, batch_size=5, progress=False, return_predictions=True)
    preds = []
    for s in samples:
        ref = brute_force(model, processor, s)
        preds.append(s.choices[max(range(len(ref)), key=lambda i: ref[i])])
    assert result["predictions"] == preds
    correct = sum(p == s.answer for p, s in zip(preds, samples))
    assert result["correct"] == correct and result["count"] == len(samples)
    assert result["accuracy"] == pytest.approx(correct / len(samples))
    cats = result["per_category"]
    assert sum(c["count"] for c in cats.values()) == len(samples)
    assert cats["odd"]["count"] == 1
    json.dumps(result)
    again = vqa_accuracy(model, processor, samples, batch_size=12, progress=False, return_predictions=True)
    assert again["predictions"] == preds


def test_no_choices_is_an_error(tiny):
    model, processor = tiny
    sample = load_easy_vqa("test", limit=1)[0]
    import dataclasses

    with pytest.raises(ValueError, match="no choices"):
        vqa_accuracy(model, processor, [dataclasses.replace(sample, choices=())], progress=False)


def test_mixed_batch_with_text_only_samples(tiny, samples):
    model, processor = tiny
    text_only = VQASample(image=None, question="Pick one", answer="yes", choices=("yes", "no", "T-shirt/top"),
                          context="A hint", category="text")
    mixed = [text_only, samples[0], samples[7]]
    got = choice_logliks(model, processor, mixed)
    for sample, row in zip(mixed, got):
        if sample.image is None:
            import dataclasses

            ref = []
            for choice in sample.choices:
                batch = collate_vqa(processor, [dataclasses.replace(sample, answer=choice)])
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=batch["input_ids"]).logits[0].float(), -1)
                labels = batch["labels"][0]
                positions = (labels != -100).nonzero().flatten()[:-1]
                ref.append(sum(logp[p - 1, labels[p]].item() for p in positions))
        else:
            ref = brute_force(model, processor, sample)
        torch.testing.assert_close(torch.tensor(row), torch.tensor(ref), rtol=1e-4, atol=1e-4)


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


@pytest.mark.parametrize("name, file", [("scienceqa", "scienceqa.parquet"), ("vizwiz", "vizwiz.parquet"),
                                        ("mmvet", "mmvet.parquet"), ("llava-bench", "llava_bench.jsonl")])
def test_benchmark_spec_names_a_local_file(name, file):
    """`--data NAME:FILE` reads a local file in the hub schema (same samples as the loader on that file)."""
    from efficientllava.prune_engine.data.calibration import load_vqa
    from efficientllava.prune_engine.data.hub import load_benchmark

    samples = load_vqa(f"{name}:{FIXTURES / file}", limit=3)
    assert samples and samples == load_benchmark(name, source=FIXTURES / file, limit=3)


def test_eval_vqa_command_on_a_local_scienceqa_file(tiny_llava_dir, tmp_path):
    from typer.testing import CliRunner

    from efficientllava.actors.cli import app

    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", "vqa", "--model", str(tiny_llava_dir), "--data",
                                      f"scienceqa:{FIXTURES / 'scienceqa.parquet'}", "--limit", "4",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["count"] >= 1
