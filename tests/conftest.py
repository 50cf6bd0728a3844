"""Shared fixtures: offline mode, a tiny random BERT for fast tests, the packaged MiniLM for e2e."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist the workers share the cores: each gets its share of threads (set before torch
# is imported, and inherited by the scripts and CLIs the tests start), or OpenMP's spinning threads
# oversubscribe the machine and the parallel run is slower than a serial one.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // _workers)))

from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# One numba cache for the whole run, whatever EMERGE_HOME a test or its subprocess uses: UMAP's and
# pynndescent's kernels compile once (`emerge.discovery.umap_kernels`), not once per temporary home.
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".emerge_home" / "numba_cache"))

import pytest  # noqa: E402
SAMPLE_CORPUS = REPO / "sample_data" / "corpus"


@pytest.fixture(scope="session")
def tokenizer():
    from emerge.encoder import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A 2-layer, 32-wide BERT with random weights and the real MiniLM tokenizer.

    max_position_embeddings=64 makes 62-token windows, so ordinary test documents already
    exercise the long-document windowing path.
    """
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    return load_encoder(EncoderConfig(model_name_or_path=str(tiny_model_dir), device="cpu", batch_size=4,
                                      window_overlap=16, dtype="float32"))


@pytest.fixture(scope="session")
def minilm_encoder():
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    return load_encoder(EncoderConfig(device="cpu", dtype="float32"))  # exact-numerics tests


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory, tokenizer):
    """A 2-layer Llama with random weights and the MiniLM tokenizer: it generates nonsense, fast."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
