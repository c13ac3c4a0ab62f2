"""Classical caption features: TF-IDF over word n-grams.

The vectoriser is fitted on train and test captions together. That uses no label, only the
vocabulary and document frequencies of text the model will see anyway, and it lets words that
occur only in test captions get an IDF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from capfuse.config.check import component_params, register_parameters


def _vectorizer(ngram_max: int, min_df: int, max_features: int | None, vocabulary=None) -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        strip_accents="unicode",
        # Words such as "no" and "not" carry meaning here ("no cars"), so no stop-word list.
        token_pattern=r"(?u)\b\w+\b",
        vocabulary=vocabulary,
    )


def fit_tfidf(
    train_captions: Sequence[str],
    test_captions: Sequence[str],
    *,
    ngram_max: int = 2,
    min_df: int = 2,
    max_features: int | None = 20000,
) -> TfidfVectorizer:
    """The vectoriser for a model's caption columns, fitted on train and test captions (its
    keyword arguments are the ``tfidf:`` block of a model config)."""
    vec = _vectorizer(ngram_max, min_df, max_features)
    vec.fit(list(train_captions) + list(test_captions))
    return vec


def tfidf_state(vec: TfidfVectorizer) -> tuple[list[str], np.ndarray]:
    """A fitted vectoriser as plain data: its terms in column order and their idf.

    The vocabulary was fitted on the training run's train and test captions; new captions
    must be transformed with it unchanged, or the linear models' columns lose their meaning.
    """
    terms = [""] * len(vec.vocabulary_)
    for term, column in vec.vocabulary_.items():
        terms[column] = term
    return terms, np.asarray(vec.idf_, dtype=np.float64)


def tfidf_transform(captions: Sequence[str], terms: list[str], idf: np.ndarray, *, ngram_max: int = 2) -> sp.csr_matrix:
    """``captions`` through the vectoriser that ``tfidf_state`` saved: the same columns and weights."""
    if len(terms) != len(idf):
        raise ValueError(f"TF-IDF state has {len(terms)} terms but {len(idf)} idf values")
    # min_df and max_features only shape the fit; a fixed vocabulary skips both.
    vec = _vectorizer(ngram_max, 1, None, vocabulary={t: i for i, t in enumerate(terms)})
    vec.idf_ = np.asarray(idf, dtype=np.float64)
    return vec.transform(list(captions)).tocsr()


# A model config's ``tfidf:`` block gives these keyword arguments (their defaults are above).
register_parameters("tfidf", component_params(fit_tfidf))
