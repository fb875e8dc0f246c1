"""Held-out evaluation: perplexity on text, constrained-choice VQA accuracy."""
