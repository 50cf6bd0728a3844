"""Readable cluster titles from distinctive keyphrases: no model, no network.

A title word must say what sets a cluster apart, so the score of a phrase in a cluster is the
share of the cluster's texts that contain it (how typical it is there) times its *lift*: how far
its concentration in this cluster rises above an even spread over all clusters. Words every
cluster uses ("said", "would") get no lift whatever their frequency, so no corpus-specific stop
list is needed. Candidates are 1-3-word runs between stop words and punctuation (noun-phrase-like,
RAKE style), after e-mail addresses, URLs and dotted host names are cut out of the text (they
are signatures and quoting, not topics), and single letters and numbers never count as words.
Every word of a chosen phrase must itself be distinctive (lift >= `min_word_lift`), so an
honorific or a reporting verb cannot ride into titles on a name ("Mr Blunkett" -> "Blunkett").
Phrases of one title share no word stem ("Virus, Viruses" is one idea) and no word holds another
("Israel, Israeli"), and a title keeps the
surface form the texts use most ("GM", "HIV", "Kilroy-Silk"). A phrase must end in a noun-like
word: without a tagger, `verb_like_words` reads each word's role off the texts themselves, from
the closed-class words before it ("the pan" vs "was added").
"""

from __future__ import annotations

import re

import numpy as np

_ADDRESS = re.compile(r"\S+@\S+|\bhttps?://\S+|\bwww\.\S+|\b[^\W_]+(?:\.[^\W_]+)+\b")
_BREAK = re.compile(r"[^\w\s'’-]+|\s[-'’]+\s|\n")  # punctuation ends a phrase
_WORD = re.compile(r"(?u)\b[^\W\d_][\w'’-]*[^\W_]\b|\S+")  # a word of 2+ letters, or something else
_MAX_WORDS = 3


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def candidate_phrases(text: str, stop_words: frozenset[str]) -> set[str]:
    """The distinct 1-3-word phrases of one text: n-grams inside runs of content words, a run
    being broken by punctuation, a stop word, a number or a one-letter token."""
    phrases: set[str] = set()
    for segment in _BREAK.split(_ADDRESS.sub(" . ", text.lower())):
        run: list[str] = []
        for token in _WORD.findall(segment) + [""]:
            word = token.strip("'’-")
            if len(word) > 1 and word not in stop_words and word[0].isalpha() and not any(c.isdigit() for c in word):
                run.append(word)
                continue
            for n in range(1, _MAX_WORDS + 1):
                phrases.update(" ".join(run[i:i + n]) for i in range(len(run) - n + 1))
            run = []
    return phrases


# Closed-class English words (a property of the language, not of any corpus): a determiner or
# possessive opens a noun phrase; a subject pronoun, an auxiliary, a modal or "to" comes before a verb
# or a predicate adjective.
_DETERMINERS = frozenset("a an the this that these those my your his her its our their some any each every "
                         "no another such".split())
_VERB_CONTEXT = frozenset("i you he she we they to will would can could shall should may might must is are "
                          "was were be been being am has have had do does did not".split())
# Irregular past forms that are never the head of a noun phrase (regular ones end in "-ed", which
# the counts below catch); ambiguous forms ("rose", "saw", "shot", "thought") are left out.
_IRREGULAR_PAST = frozenset("""went gone came took taken got gotten gave given said told brought bought sought caught
taught kept held stood understood meant paid sent spent lent lost won ran began begun knew known grew grown threw
thrown flew flown wrote written rode ridden risen driven broke broken spoken chose chosen froze stolen woke woken
wore worn tore torn swore sworn fell fallen forgot forgotten hid hidden ate eaten seen sang sung sank sunk swam
swum rang rung drank shook shaken fought heard fled slept stuck struck dug""".split())
# A participle, gerund or adverb ("charged", "adding", "generously") heads no noun phrase unless
# the texts also put it right after a determiner ("the building", "the family").
_VERB_SUFFIXES = ("ed", "ing", "ly")
_TOKEN = re.compile(r"(?u)[^\W\d_][\w'’-]*|[.!?;:,()\[\]\"]")


def verb_like_words(texts: list[str]) -> frozenset[str]:
    """Lower-case words these texts use more often as verbs or predicate adjectives than as the
    head of a noun phrase: more occurrences right after a subject pronoun, auxiliary, modal or "to"
    ("was added", "to win", "is warm") than after a determiner ("the pan", "a win"; half a count
    with one word between: "the hot pan"), "-ed"/"-ing"/"-ly" words never seen right after a
    determiner ("adding", "generously"), and irregular past forms.
    A phrase ending in such a word is no title ("Account Went", "Cucumbers Warm"). Words the texts
    mostly capitalise are names and never count as verb-like."""
    verbal: dict[str, float] = {}
    nominal: dict[str, float] = {}
    capitalised: dict[str, int] = {}
    total: dict[str, int] = {}
    after_determiner: set[str] = set()
    for text in texts:
        before = prev = "."
        for token in _TOKEN.findall(_ADDRESS.sub(" . ", text)):
            word = token.lower()
            if word[0].isalpha():
                total[word] = total.get(word, 0) + 1
                if token[0].isupper() and prev not in ".!?;:\"":
                    capitalised[word] = capitalised.get(word, 0) + 1
                if prev in _VERB_CONTEXT:
                    verbal[word] = verbal.get(word, 0) + 1
                elif prev in _DETERMINERS:
                    nominal[word] = nominal.get(word, 0) + 1
                    after_determiner.add(word)
                elif before in _DETERMINERS and prev[0].isalpha():  # "the loan application", or "the bank charged"
                    nominal[word] = nominal.get(word, 0) + 0.5
            before, prev = prev, word
    return frozenset(w for w, n in total.items() if capitalised.get(w, 0) * 2 < n and (
        w in _IRREGULAR_PAST or verbal.get(w, 0) > nominal.get(w, 0)
        or (w.endswith(_VERB_SUFFIXES) and w not in after_determiner)))


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def ctfidf_keyphrases(texts_by_cluster: dict[int, list[str]], top_n: int = 5,
                      expand_share: float = 0.5, min_word_lift: float = 0.25) -> dict[int, list[str]]:
    """Top keyphrases per cluster, best first, made diverse.

    Score = share of the cluster's texts containing the phrase x lift (see the module
    docstring). A chosen single word is replaced by a longer phrase containing it when that
    phrase occurs in at least `expand_share` of the texts the word occurs in ("shuttle" ->
    "space shuttle"): the phrase is how the cluster uses the word. A phrase with a word below
    `min_word_lift`, or sharing a word stem with a phrase chosen before it, is skipped, so titles
    read "Revenue Growth, Supply Chain" rather than "Revenue, Revenue Growth".
    """
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import CountVectorizer

    ids = sorted(texts_by_cluster)
    if not ids:
        return {}
    stop_words = _stop_words()
    sizes = np.array([max(len(texts_by_cluster[c]), 1) for c in ids], np.float64)
    vectorizer = CountVectorizer(analyzer=lambda text: candidate_phrases(text, stop_words), binary=True)
    texts = [t for c in ids for t in texts_by_cluster[c]]
    try:
        presence = vectorizer.fit_transform(texts)
    except ValueError:  # no candidate phrase anywhere
        return {c: [] for c in ids}
    vocab = np.asarray(vectorizer.get_feature_names_out())
    owner = np.repeat(np.arange(len(ids)), [len(texts_by_cluster[c]) for c in ids])
    by_cluster = csr_matrix((np.ones(len(texts)), (owner, np.arange(len(texts)))), shape=(len(ids), len(texts)))
    counts = np.asarray((by_cluster @ presence).todense(), np.float64)        # (clusters, phrases): texts containing
    share = counts / sizes[:, None]
    k = len(ids)
    if k > 1:
        concentration = share / np.maximum(share.sum(axis=0, keepdims=True), 1e-12)
        lift = np.clip((concentration - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0)
    else:
        lift = np.ones_like(share)
    scores = share * lift
    n_words = np.array([p.count(" ") + 1 for p in vocab])
    word_index = {p: i for i, p in enumerate(vocab) if " " not in p}
    stem = _stemmer().stemWord

    verb_like = verb_like_words(texts)

    def distinctive(row: int, phrase: str) -> bool:
        words = phrase.split()
        return words[-1] not in verb_like and all(
            w in word_index and lift[row, word_index[w]] >= min_word_lift for w in words)

    longer: dict[str, list[int]] = {}
    for i, p in enumerate(vocab):
        if n_words[i] > 1:
            for w in set(p.split()):
                longer.setdefault(w, []).append(i)
    out: dict[int, list[str]] = {}
    for row, c in enumerate(ids):
        order = np.flatnonzero(scores[row] > 0)
        order = order[np.lexsort((vocab[order], -scores[row, order]))]  # best first, ties by text
        chosen: list[str] = []
        used: set[str] = set()
        for i in order:
            phrase = vocab[i]
            if not distinctive(row, phrase):
                continue
            options = [phrase]
            if n_words[i] == 1:
                wider = [j for j in longer.get(phrase, []) if counts[row, j] >= expand_share * counts[row, i]
                         and scores[row, j] > 0 and distinctive(row, vocab[j])]
                if wider:  # the phrase first; the word alone if the phrase repeats a chosen word
                    options.insert(0, vocab[max(wider, key=lambda j: (counts[row, j], -n_words[j], vocab[j]))])
            for option in options:
                stems = {stem(w) for w in option.split()}
                if not stems & used and not _contains_a_word_of(option, chosen):
                    chosen.append(option)
                    used |= stems
                    break
            if len(chosen) == top_n:
                break
        out[c] = [surface_form(p, texts_by_cluster[c]) for p in chosen]
    return out


def _contains_a_word_of(phrase: str, chosen: list[str], min_chars: int = 4) -> bool:
    """True when a word of `phrase` holds a chosen word or is held by one ("Israel" / "Israeli",
    "Sexual" / "Homosexual"): the stemmer keeps those apart, a reader sees one idea twice."""
    words = [w for w in phrase.split() if len(w) >= min_chars]
    others = [w for p in chosen for w in p.split() if len(w) >= min_chars]
    return any(a in b or b in a for a in words for b in others)


def surface_form(phrase: str, texts: list[str], max_texts: int = 200) -> str:
    """`phrase` as the texts write it most often ("gm" -> "GM"); the lower-case phrase when no
    text has it verbatim."""
    from collections import Counter

    pattern = re.compile(r"(?<![\w'’-])" + r"[\s'’-]+".join(re.escape(w) for w in phrase.split()) + r"(?![\w'’-])",
                         re.IGNORECASE)
    forms = Counter(m.group(0) for t in texts[:max_texts] for m in pattern.finditer(t))
    if not forms:
        return phrase
    best = max(forms.items(), key=lambda kv: (kv[1], kv[0].islower()))[0]
    return " ".join(best.split())


def title_from_keyphrases(phrases: list[str], n: int = 2, max_words: int = 4) -> str:
    """The first `n` keyphrases as one short title ("Space Shuttle, Orbit"), at most
    `max_words` words (the first phrase always counts in full)."""
    if not phrases:
        return "Untitled"
    picked = [phrases[0]]
    for phrase in phrases[1:n]:
        if sum(p.count(" ") + 1 for p in picked) + phrase.count(" ") + 1 > max_words:
            break
        picked.append(phrase)
    return ", ".join(_title_case(p) for p in picked)


def _title_case(phrase: str) -> str:
    """Capitalise lower-case words only: "GM", "iPhone" and "Kilroy-Silk" stay as written."""
    return " ".join(w[:1].upper() + w[1:] if w.islower() else w for w in phrase.split())
