"""Data for calibration, the proxy loss and evaluation (docs/method.md §6).

Re-exports only; one import block per module.
"""

from efficientllava.prune_engine.data.text import (  # noqa: F401
    DataError,
    Document,
    TextSpec,
    eval_segments,
    load_hf_text,
    load_pydoc,
    load_text,
    load_wiki,
    parse_text_spec,
    read_json_documents,
    read_txt_documents,
    pydoc_split,
    text_segments,
    wiki_split,
)

from efficientllava.prune_engine.data.hub import (  # noqa: F401
    BENCHMARKS,
    SCIENCEQA_TAGS,
    load_benchmark,
    load_llava_bench,
    load_mmvet,
    load_scienceqa,
    load_vizwiz,
    scienceqa_tags,
)

from efficientllava.prune_engine.data.vqa import VQASample  # noqa: F401
