"""Models: the adapter the pruner works through, loading by --model value, and the embedded models (SmolLM2, smol-llava)."""
