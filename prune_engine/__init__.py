"""The pruning engine: SparseGPT maths, model adapters, the layer-sequential pipeline, data, evaluation and export (no Ray)."""
