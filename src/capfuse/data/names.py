"""Class names discovered from the captions, for datasets that ship labels as bare numbers.

The COMP5329 data, like most competition data, labels images 1-19 and ships no ``classes.csv``,
so every method that reads label text (label-query prompts, zero-shot scoring, search) would
read "class 3". The captions say what the classes are: a word that appears far more often with
a label than without it names it. For each class and each caption term (a word, or two adjacent
content words such as "fire hydrant") this module scores that association and keeps the best
terms, from which a display name and several prompts are made.

The score of term ``t`` for class ``c`` is the z-score of the smoothed log-odds ratio of ``t``'s
presence among the rows labelled ``c`` against the rows without it (Monroe, Colaresi and Quinn's
"Fightin' words" statistic): a log-odds ratio alone ranks a word seen five times, always with
``c``, above the word most of ``c``'s captions use; dividing by its standard error prefers the
common one, which is what a name should be. Three things are left out or down-weighted:

* stop words and words of fewer than ``min_rows`` rows never become terms;
* a word said almost only inside one compound ("decker" in "double decker") is no term of its
  own: the compound already says it;
* a term specific to several classes ("vehicle" with car, truck and bus; "riding" with person,
  horse and bicycle; "man" with the classes people ride) loses ``rival_weight`` times its best
  score for any other class, so it ranks below the words that tell the classes apart.

Discovery reads labels, so a caller inside cross-validation passes the fold's training rows
only (``capfuse.models.net`` and ``capfuse.zeroshot.cv`` do). Everything is counted in sparse
matrices with a sorted vocabulary and ties broken by the term's text: the same rows give the
same names, in about a second at 30,000 captions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

# Bump when the terms or scores a set of rows gives change, so runs that used them retrain.
DISCOVERY_VERSION = 2

# Function words and caption boilerplate ("a photo of", "there is", "next to"): frequent in
# every class, so they would only ever win by chance in a small class.
STOP_WORDS = frozenset(
    """a an the and or but of to in on at by for with from into onto over under near next
    beside behind above below across along around through up down out off about while as
    is are was were be been being am has have had do does did it its it's this that these
    those there here their they them he she his her him we our you your i me my one two three
    four five some several many few group pair couple lot lots bunch other another each
    photo picture image view shot close closeup scene taking taken looking seen shown
    what which who whom very just also all any no not""".split()
)

# Plurals that no suffix rule turns into their singular.
IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot", "mice": "mouse"}

# A setting phrase starts at a locative preposition and runs a few words ("at the train
# station", "on a busy road"), until a word that starts another object ("and", "with", "near").
LOCATIVE = frozenset({"in", "at", "on", "by", "inside"})
LOCATIVE_THE = frozenset({"near", "beside", "behind", "along", "across"})  # "near the pier", not "near a car"
SETTING_BREAK = frozenset({"and", "with", "near", "next", "beside", "behind", "while", "riding"})
SETTING_SPAN = 3


def _participle(word: str) -> bool:
    """Participles ("playing", "parked"): what a thing does, said of many things. Short words ("bed", "sled",
    "thing") are nouns; a longer noun that looks like a participle only loses half its score."""
    return len(word) >= 6 and word.endswith(("ing", "ed"))


_SEGMENT = re.compile(r"[^a-z' ]+")  # punctuation ends a phrase: no bigram spans "bus, a car"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class DiscoverySettings:
    """How many terms, and how they are scored. Every value is a reason, not a tuning."""

    # A name and a few synonyms: enough prompts to average, few enough to stay on topic.
    top_terms: int = 5
    # A term in fewer training rows is a typo or a one-off.
    min_rows: int = 3
    # Jeffreys' prior on each cell of the 2x2 table: finite log-odds for a word seen only with c.
    smoothing: float = 0.5
    # Standard errors taken off each log-odds ratio, so that a word in 130 rows, never without
    # the class, cannot outrank one in 1,300 rows on luck (at 1.0, "crowd" named person in the
    # 30,000-row generated set; at 1.5 and 2.0 "person" did).
    confidence: float = 1.5
    # Half a rival class's score: a shared word drops, a word one class owns keeps most of its lead.
    rival_weight: float = 0.5
    # A word always said as the setting ("at the airport") or as a modifier ("fire" hydrant)
    # keeps half its score: it says where or which, not what.
    aside_weight: float = 0.5
    # Prompts per class (the name and its next two terms), averaged: synonyms widen a prompt,
    # terms further down drift off the class.
    prompt_terms: int = 3
    # A compound ending in the top word names the class when it scores at least this share of it.
    phrase_ratio: float = 0.6


@dataclass(frozen=True)
class ClassTerms:
    """One class's discovered terms, best first, with their scores (z units)."""

    id: int
    name: str
    terms: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def score(self) -> float:
        return self.scores[0] if self.scores else 0.0


# --------------------------------------------------------------------------------------------
# Terms of a caption
# --------------------------------------------------------------------------------------------
def _singular(word: str, vocab: set[str]) -> str:
    """``word``'s singular when the captions also use it ("buses" -> "bus", "puppies" -> "puppy"),
    so a class's singular and plural captions count for one term."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word.endswith("ies") and word[:-3] + "y" in vocab:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2] in vocab and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and word[:-1] in vocab:
        return word[:-1]
    return word


def _segments(caption: str) -> list[list[str]]:
    return [_WORD.findall(part) for part in _SEGMENT.split(str(caption).lower())]


def _row_terms(segments: list[list[str]], singular: dict[str, str]) -> tuple[set[str], set[str]]:
    """A caption's distinct terms (content words in the singular, two-word phrases of them) and
    those of its terms that are not a thing's name here: said as the setting ("at the airport",
    "on a busy road") or, for a word, modifying the word after it ("fire" in "fire hydrant",
    "traffic" in "traffic light"; a participle after a noun, "dog running", modifies nothing) or
    a participle, with the phrases it ends ("playing", "dog playing")."""
    terms: set[str] = set()
    aside: set[str] = set()
    for seg in segments:
        words = [singular[w] if w not in STOP_WORDS and len(w) > 1 else None for w in seg]
        since_prep = None  # tokens since a locative preposition, None outside a setting phrase
        for i, (raw, w) in enumerate(zip(seg, words)):
            after = seg[i + 1] if i + 1 < len(seg) else ""
            if raw in LOCATIVE or (raw in LOCATIVE_THE and after == "the"):
                since_prep = 0
                continue
            if since_prep is not None:
                since_prep = None if raw in SETTING_BREAK or since_prep >= SETTING_SPAN else since_prep + 1
            if w is None:
                continue
            phrase = [f"{words[i - 1]} {w}"] if i and words[i - 1] else []
            terms.update([w, *phrase])
            if since_prep is not None or _participle(w):
                aside.update([w, *phrase])
            elif i + 1 < len(seg) and words[i + 1] and not _participle(after):
                aside.add(w)
    return terms, aside


def caption_terms(captions: Sequence[str]) -> list[tuple[set[str], set[str]]]:
    """Each caption's ``(terms, terms in a setting phrase)``, as ``_row_terms`` reads them."""
    segmented = [_segments(c) for c in captions]
    vocab = {w for segs in segmented for seg in segs for w in seg}
    singular = {w: _singular(w, vocab) for w in vocab}
    return [_row_terms(segs, singular) for segs in segmented]


def presence_matrix(captions: Sequence[str], min_rows: int) -> tuple[sparse.csc_matrix, list[str], np.ndarray]:
    """Binary ``[rows, terms]`` presence of every term in at least ``min_rows`` rows (sorted
    vocabulary), and each term's share of rows where it does not name a thing (``_row_terms``)."""
    per_row = caption_terms(captions)
    counts: dict[str, int] = {}
    for terms, _ in per_row:
        for t in terms:
            counts[t] = counts.get(t, 0) + 1
    vocab = sorted(t for t, n in counts.items() if n >= min_rows)
    index = {t: j for j, t in enumerate(vocab)}
    rows, cols = [], []
    placed = np.zeros(len(vocab))
    for r, (terms, where) in enumerate(per_row):
        for t in terms:
            j = index.get(t)
            if j is not None:
                rows.append(r)
                cols.append(j)
        for t in where:
            j = index.get(t)
            if j is not None:
                placed[j] += 1
    data = np.ones(len(rows), np.float64)
    X = sparse.csc_matrix((data, (rows, cols)), shape=(len(per_row), len(vocab)))
    return X, vocab, placed / np.maximum(np.asarray(X.sum(0)).ravel(), 1)


# --------------------------------------------------------------------------------------------
# Scores and names
# --------------------------------------------------------------------------------------------
def term_scores(X: sparse.spmatrix, Y: np.ndarray, smoothing: float, confidence: float) -> np.ndarray:
    """``[classes, terms]`` z-scores of the smoothed log-odds ratio of each term's presence with
    each label against its presence without it."""
    Y = np.asarray(Y, np.float64)
    n = float(len(Y))
    with_label = np.asarray((sparse.csr_matrix(Y.T) @ X).todense())  # [C, V]: rows with c and t
    df = np.asarray(X.sum(0)).ravel()[None, :]
    n1 = Y.sum(0)[:, None]
    a, b = with_label, df - with_label
    c_, d = n1 - a, (n - n1) - b
    s = smoothing
    delta = np.log((a + s) / (c_ + s)) - np.log((b + s) / (d + s))
    var = 1 / (a + s) + 1 / (c_ + s) + 1 / (b + s) + 1 / (d + s)
    return delta - confidence * np.sqrt(var)


def specific_scores(z: np.ndarray, rival_weight: float) -> np.ndarray:
    """Each class's scores less ``rival_weight`` times the term's best positive score elsewhere."""
    if len(z) < 2:
        return z.copy()
    pos = np.clip(z, 0, None)
    order = np.sort(pos, axis=0)
    top, second = order[-1], order[-2]
    # The best other class: the runner-up for the class that holds the top, the top for the rest.
    rival = np.where(pos >= top[None, :], second[None, :], top[None, :])
    return z - rival_weight * rival


def _ranked(scores: np.ndarray, vocab: list[str], k: int) -> list[tuple[str, float]]:
    # Ties go to the term's text, never to memory order.
    order = sorted(range(len(vocab)), key=lambda j: (-round(float(scores[j]), 9), vocab[j]))
    return [(vocab[j], float(scores[j])) for j in order[:k] if scores[j] > 0]


def cohesive_phrases(X: sparse.spmatrix, vocab: list[str]) -> set[str]:
    """Two-word phrases that hold most uses of one of their words: compounds ("fire hydrant",
    "traffic light"), not a common adjective in front of a common noun ("large airplane")."""
    df = np.asarray(X.sum(0)).ravel()
    index = {t: j for j, t in enumerate(vocab)}
    out = set()
    for j, term in enumerate(vocab):
        parts = term.split()
        if len(parts) == 2 and any(p in index and df[j] >= 0.5 * df[index[p]] for p in parts):
            out.add(term)
    return out


def subsumed_words(X: sparse.spmatrix, vocab: list[str], compounds: set[str], share: float = 0.9) -> set[str]:
    """Words said almost only inside one compound ("decker" in "double decker", "push" in "push
    bike"): as a term they repeat the compound, and as a prompt ("a photo of a decker.") they
    name nothing. A word also said alone ("hydrant" beside "fire hydrant") stays."""
    df = np.asarray(X.sum(0)).ravel()
    index = {t: j for j, t in enumerate(vocab)}
    out = set()
    for phrase in compounds:
        for word in phrase.split():
            if word in index and df[index[phrase]] >= share * df[index[word]]:
                out.add(word)
    return out


def display_name(ranked: list[tuple[str, float]], ratio: float, compounds: set[str]) -> str | None:
    """The top term, or a compound it ends that scores nearly as well ("hydrant" -> "fire hydrant").

    Only a compound whose last word is the top term: in English that word is the phrase's head,
    so the phrase is a kind of it; "train station" is a kind of station, not of train.
    """
    if not ranked:
        return None
    top, best = ranked[0]
    for term, score in ranked[1:]:
        if term in compounds and term.split()[-1] == top and score >= ratio * best:
            return term
    return top


def discover_names(
    captions: Sequence[str],
    Y: np.ndarray,
    class_ids: Sequence[int],
    settings: DiscoverySettings | None = None,
) -> list[ClassTerms]:
    """One ``ClassTerms`` per column of ``Y`` from these rows' captions and labels.

    A class whose captions never set it apart keeps the name "class N" and no terms. Two classes
    never share a display name: the weaker one takes its next term that no other class took.
    """
    settings = settings or DiscoverySettings()
    Y = np.asarray(Y)
    if len(captions) != len(Y) or Y.shape[1] != len(class_ids):
        raise ValueError(f"{len(captions)} captions, labels {Y.shape}, {len(class_ids)} class ids: they must agree")
    X, vocab, placed = presence_matrix(captions, settings.min_rows)
    # Words and compounds only: "large airplane" or "old fire" (from "an old fire hydrant") add
    # nothing that their words do not say, and would crowd a class's terms with variants.
    compounds = cohesive_phrases(X, vocab)
    inside = subsumed_words(X, vocab, compounds)
    keep = [j for j, t in enumerate(vocab) if (" " not in t and t not in inside) or t in compounds]
    X, vocab, placed = X[:, keep], [vocab[j] for j in keep], placed[keep]
    if not vocab:
        return [ClassTerms(int(c), f"class {c}", (), ()) for c in class_ids]
    spec = specific_scores(term_scores(X, Y, settings.smoothing, settings.confidence), settings.rival_weight)
    spec = np.where(spec > 0, spec * (1 - settings.aside_weight * placed[None, :]), spec)
    depth = max(settings.top_terms * 4, 20)  # room for a phrase below the top terms and for clashes
    ranked = [_ranked(spec[c], vocab, depth) for c in range(len(class_ids))]
    names: dict[int, str] = {}
    # The strongest classes choose first, so a clash costs the class with the weaker claim.
    for c in sorted(range(len(class_ids)), key=lambda c: (-(ranked[c][0][1] if ranked[c] else 0.0), c)):
        taken = set(names.values())
        options = [(t, s) for t, s in ranked[c] if t not in taken]
        name = display_name(options, settings.phrase_ratio, compounds)
        names[c] = name if name else f"class {class_ids[c]}"
    out = []
    for c, cid in enumerate(class_ids):
        top = ranked[c][: settings.top_terms]
        out.append(ClassTerms(int(cid), names[c], tuple(t for t, _ in top), tuple(round(s, 3) for _, s in top)))
    return out


def prompt_terms(found: ClassTerms, k: int) -> list[str]:
    """The display name first, then the next best terms: what a class's prompts read."""
    terms = [found.name] + [t for t in found.terms if t != found.name]
    return terms[: max(1, k)]


def fold_prompt_terms(
    captions: Sequence[str], Y: np.ndarray, rows: np.ndarray, class_ids: Sequence[int], settings: DiscoverySettings
) -> tuple[list[ClassTerms], list[list[str]]]:
    """Names and prompt terms from ``rows`` of ``captions`` with their labels ``Y`` (one row of
    ``Y`` per entry of ``rows``): a fold's training rows, never its held-out ones."""
    found = discover_names([captions[r] for r in np.asarray(rows)], Y, class_ids, settings)
    return found, [prompt_terms(f, settings.prompt_terms) for f in found]


def names_frame(found: Sequence[ClassTerms]) -> pd.DataFrame:
    """``id,name,terms,score``: terms joined by "; ", the file a user reviews and may copy to classes.csv."""
    return pd.DataFrame(
        {
            "id": [f.id for f in found],
            "name": [f.name for f in found],
            "terms": ["; ".join(f.terms) for f in found],
            "score": [round(f.score, 2) for f in found],
        }
    )


def names_table(found: Sequence[ClassTerms]) -> str:
    """The discovered names as a plain-text table for the log and the terminal."""
    frame = names_frame(found)
    return frame.to_string(index=False, justify="left")


# --------------------------------------------------------------------------------------------
# Where a dataset's names come from
# --------------------------------------------------------------------------------------------
NAME_MODES = ("auto", "discover", "numbers")
DISCOVERED_FILE = "classes_discovered.csv"


@dataclass(frozen=True)
class ClassNames:
    """A dataset's class names and where they came from: ``file`` (classes.csv), ``discovered``
    (from all training rows; ``found`` holds the terms) or ``numbers`` ("class N")."""

    source: str
    names: tuple[str, ...]
    found: tuple[ClassTerms, ...] = ()
    settings: DiscoverySettings = DiscoverySettings()

    @property
    def discovered(self) -> bool:
        return self.source == "discovered"


def choose_names(
    mode: str,
    has_file: bool,
    file_names: Sequence[str],
    captions: Sequence[str],
    Y: np.ndarray,
    class_ids: Sequence[int],
    settings: DiscoverySettings | None = None,
) -> ClassNames:
    """``auto``: a user's classes.csv wins, else names discovered from the captions; ``discover``:
    discovered even beside a classes.csv (to compare the two); ``numbers``: "class N"."""
    if mode not in NAME_MODES:
        raise ValueError(f"data.class_names must be one of {list(NAME_MODES)}, got {mode!r}")
    settings = settings or DiscoverySettings()
    if mode == "auto" and has_file:
        return ClassNames("file", tuple(file_names))
    if mode == "numbers":
        return ClassNames("numbers", tuple(f"class {c}" for c in class_ids))
    found = tuple(discover_names(captions, Y, class_ids, settings))
    return ClassNames("discovered", tuple(f.name for f in found), found, settings)
