import numpy as np
import pytest
import torch

from emerge.embedding import embed_spans
from emerge.embedding import pool_spans
from emerge.ingest import documents_from_texts
from emerge.spans import build_spans
from emerge.config import SpanConfig

TEXT = ("Revenue grew by fifteen percent year over year. The new product line contributed significantly. "
        "Supply chain issues from last year have mostly been resolved, and raw materials are on order. ")


def direct_token_embeddings(encoder, ids):
    """Reference: the model run by hand on [CLS] ids [SEP], specials dropped."""
    tok = encoder.tokenizer
    seq = torch.tensor([[tok.cls_token_id, *ids.tolist(), tok.sep_token_id]])
    with torch.inference_mode():
        out = encoder.model(input_ids=seq, attention_mask=torch.ones_like(seq)).last_hidden_state[0]
    return out[1:-1].numpy()


@pytest.mark.parametrize("n", [300, 6000])  # float32 and float64 prefix-sum paths
def test_prefix_sum_pooling_equals_mean(n):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(n, 16)).astype(np.float32) * 10
    s = rng.integers(0, n - 1, size=200)
    e = s + rng.integers(1, np.minimum(n - s, 64) + 1)
    pooled = pool_spans(t, s, e)
    expected = np.stack([t[a:b].mean(axis=0) for a, b in zip(s, e)])
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-4)
    unit = pool_spans(t, s, e, normalise=True)
    np.testing.assert_allclose(unit, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


def test_windows_partition_every_token(tiny_encoder):
    for n in [1, 10, 62, 63, 100, 500, 1234]:
        windows = tiny_encoder.windows(n)
        kept = [i for _, _, ka, kb in windows for i in range(ka, kb)]
        assert kept == list(range(n))
        for a, b, ka, kb in windows:
            assert a <= ka <= kb <= b and b - a <= tiny_encoder.max_seq_length - 2


def test_late_chunked_span_vector_is_mean_of_document_token_embeddings(minilm_encoder):
    docs = documents_from_texts([TEXT]).documents
    spans, _ = build_spans(docs, minilm_encoder.tokenizer, SpanConfig(min_len=4, max_len=12, stride=3))
    vectors = embed_spans(docs, spans, minilm_encoder, dtype=np.float32)
    ids = minilm_encoder.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    tokens = direct_token_embeddings(minilm_encoder, np.asarray(ids))
    for row, (s, e) in enumerate(spans.select("tok_start", "tok_end").iter_rows()):
        expected = tokens[s:e].mean(axis=0)
        expected /= np.linalg.norm(expected)
        np.testing.assert_allclose(vectors[row], expected, atol=2e-5)


def test_long_document_windows_match_direct_passes(tiny_encoder):
    long_text = TEXT * 6  # ~200 tokens > the tiny model's 62-token windows
    (ids, _), = [(np.asarray(x), None) for x in [tiny_encoder.tokenizer(long_text, add_special_tokens=False)["input_ids"]]]
    stitched, = tiny_encoder.token_embeddings([ids])
    assert stitched.shape == (len(ids), tiny_encoder.dim)
    for a, b, ka, kb in tiny_encoder.windows(len(ids)):
        direct = direct_token_embeddings(tiny_encoder, ids[a:b])
        np.testing.assert_allclose(stitched[ka:kb], direct[ka - a:kb - a], atol=1e-5)


def test_padding_in_batches_does_not_change_embeddings(tiny_encoder):
    texts = [TEXT, "short one", TEXT * 3]
    ids = [np.asarray(x) for x in tiny_encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    together = tiny_encoder.token_embeddings(ids)
    for i in range(3):
        alone, = tiny_encoder.token_embeddings([ids[i]])
        np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_forward_passes_do_not_scale_with_span_count(tiny_encoder):
    calls = []
    hook = tiny_encoder.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        docs = documents_from_texts([TEXT * 2, TEXT]).documents
        sparse, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=16, max_len=16, stride=16))
        embed_spans(docs, sparse, tiny_encoder)
        sparse_calls = len(calls)
        calls.clear()
        dense, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=2, max_len=40, stride=1))
        embed_spans(docs, dense, tiny_encoder)
        assert dense.height > 20 * sparse.height
        assert len(calls) == sparse_calls
    finally:
        hook.remove()


def test_embeddings_are_unit_norm_and_finite(tiny_encoder):
    docs = documents_from_texts([TEXT, TEXT.upper()]).documents
    spans, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=4, max_len=20, stride=2))
    v = embed_spans(docs, spans, tiny_encoder)
    assert v.dtype == np.float16  # stored precision: half the memory and disk of float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v.astype(np.float32), axis=1), 1.0, atol=2e-3)
    exact = embed_spans(docs, spans, tiny_encoder, dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(exact, axis=1), 1.0, atol=1e-5)
    assert (exact * v.astype(np.float32)).sum(axis=1).min() > 0.999


def test_resolve_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    from types import SimpleNamespace

    from emerge.encoder import resolve_device

    def machine(cuda: bool, mps: bool | None):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        backends = SimpleNamespace() if mps is None else SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps))
        monkeypatch.setattr(torch, "backends", backends)

    machine(cuda=True, mps=True)
    assert resolve_device("auto") == "cuda"
    machine(cuda=False, mps=True)
    assert resolve_device("auto") == "mps"
    machine(cuda=False, mps=False)
    assert resolve_device("auto") == "cpu"
    machine(cuda=False, mps=None)  # a torch build without the MPS backend
    assert resolve_device("auto") == "cpu"
    machine(cuda=True, mps=True)
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"  # an explicit device wins


def test_encoder_is_loaded_once_per_process(tiny_model_dir, tiny_encoder):
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    again = load_encoder(EncoderConfig(model_name_or_path=str(tiny_model_dir), device="cpu", batch_size=4,
                                       window_overlap=16, dtype="float32"))
    assert again is tiny_encoder


def test_a_model_rewritten_in_place_is_loaded_again(tiny_model_dir, tmp_path):
    """A fine-tuned model saved again into the same folder must not be served from the cache."""
    import os
    import shutil

    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = EncoderConfig(model_name_or_path=str(folder), device="cpu", batch_size=4, dtype="float32")
    first = load_encoder(config)
    assert load_encoder(config) is first
    weights = next(f for f in folder.iterdir() if f.suffix == ".safetensors")
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))  # as a re-save would
    assert load_encoder(config) is not first


def test_auto_dtype_picks_a_fast_path_only_where_one_exists(monkeypatch):
    from emerge import encoder as enc

    monkeypatch.setattr(enc, "native_bf16_cpu", lambda: True)
    assert enc.resolve_dtype("auto", "cpu") == "bfloat16"
    assert enc.resolve_dtype("auto", "cuda:1") == "float16"
    assert enc.resolve_dtype("auto", "mps") == "float32"
    assert enc.resolve_dtype("float32", "cuda") == "float32"
    monkeypatch.setattr(enc, "native_bf16_cpu", lambda: False)
    assert enc.resolve_dtype("auto", "cpu") == "float32"
    assert enc.resolve_dtype("float16", "cpu") == "float32"  # no fast fp16 on CPU: falls back


def test_bfloat16_forward_pass_keeps_span_vectors_close_to_float32(tiny_model_dir, tiny_encoder):
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    bf16 = load_encoder(EncoderConfig(model_name_or_path=str(tiny_model_dir), device="cpu", batch_size=4,
                                      window_overlap=16, dtype="bfloat16"))
    assert bf16 is not tiny_encoder and bf16.compute_dtype == "bfloat16"
    docs = documents_from_texts([TEXT * 3, TEXT]).documents
    spans, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=4, max_len=20, stride=2))
    exact = embed_spans(docs, spans, tiny_encoder, dtype=np.float32)
    fast = embed_spans(docs, spans, bf16, dtype=np.float32)
    assert fast.dtype == np.float32 and np.isfinite(fast).all()
    cosines = (exact * fast).sum(axis=1)
    assert not np.array_equal(exact, fast)  # the reduced precision really ran
    assert cosines.min() > 0.99


def test_bfloat16_minilm_span_vectors_stay_within_the_documented_1e4_cosine(minilm_encoder):
    """README/BENCHMARKS state that bf16 span vectors of the packaged model stay within 1e-4
    cosine of float32 (`bench/precision.py`); this holds the claim to the real model."""
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    bf16 = load_encoder(EncoderConfig(device="cpu", dtype="bfloat16"))
    docs = documents_from_texts([TEXT * 4, TEXT]).documents
    spans, _ = build_spans(docs, minilm_encoder.tokenizer, SpanConfig(min_len=16, max_len=64, stride=8))
    exact = embed_spans(docs, spans, minilm_encoder, dtype=np.float32)
    fast = embed_spans(docs, spans, bf16, dtype=np.float32)
    assert not np.array_equal(exact, fast)
    assert (exact * fast).sum(axis=1).min() > 1 - 1e-4


def test_wraps_a_sentence_transformer(minilm_encoder):
    from sentence_transformers import SentenceTransformer

    from emerge.encoder import TokenEncoder, packaged_model_path

    st_model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    wrapped = TokenEncoder.from_pretrained_objects(st_model, None)
    a = wrapped.embed_texts(["the cat sat on the mat"])
    b = minilm_encoder.embed_texts(["the cat sat on the mat"])
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert wrapped.max_seq_length == 256


def test_span_order_does_not_change_any_span_vector(tiny_encoder):
    docs = documents_from_texts([TEXT * 2, TEXT, TEXT.upper()]).documents
    spans, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=4, max_len=16, stride=3))
    shuffled = spans.sample(fraction=1.0, shuffle=True, seed=7)  # documents interleaved
    grouped = embed_spans(docs, spans, tiny_encoder, dtype=np.float32)
    mixed = embed_spans(docs, shuffled, tiny_encoder, dtype=np.float32)
    by_idx = dict(zip(spans["span_idx"].to_list(), grouped))
    for idx, vec in zip(shuffled["span_idx"].to_list(), mixed):
        np.testing.assert_allclose(vec, by_idx[idx], atol=1e-6)


def test_the_tokenizer_loads_without_torch_and_as_autotokenizer_would(tmp_path):
    """A process that only cuts spans (each per-source `spans` step) must not pay torch's import
    for its tokenizer, and must get what AutoTokenizer gives: same class, ids and offsets."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from emerge.encoder import _transformer_dir, load_tokenizer, resolve_model_path

    code = ("import sys; from emerge.encoder import load_tokenizer; tok = load_tokenizer(None); "
            "print(type(tok).__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert out.stdout.split()[-2:] == ["BertTokenizer", "False"], out.stdout + out.stderr[-2000:]

    path = _transformer_dir(resolve_model_path(None))
    texts = ["Naïve café — résumé, 12,345 co-operate!", "  Spaces\tand\nlines  ", TEXT * 3]
    kwargs = dict(add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    auto = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ours = load_tokenizer(None)
    assert type(ours) is type(auto) and ours.model_max_length == auto.model_max_length
    assert ours(texts, **kwargs) == auto(texts, **kwargs)
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (auto.cls_token_id, auto.sep_token_id,
                                                                          auto.pad_token_id)
    # a folder whose tokenizer_config names no class still loads, through AutoTokenizer
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(path / name, unnamed / name)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class")
    (unnamed / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(str(unnamed))(texts, **kwargs) == auto(texts, **kwargs)
