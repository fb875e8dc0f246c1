import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, tiny_llama_dir):
    from tiny_models import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava", tiny_llama_dir)
