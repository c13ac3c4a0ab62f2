"""Classical caption features: TF-IDF over word n-grams.

The vectoriser is fitted on train and test captions together. That uses no label, only the
vocabulary and document frequencies of text the model will see anyway, and it lets words that
occur only in test captions get an IDF.
"""

from __future__ import annotations

from collections.abc import Sequence

import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from capfuse.config.check import component_params, register_parameters


def tfidf_features(
    train_captions: Sequence[str],
    test_captions: Sequence[str],
    *,
    ngram_max: int = 2,
    min_df: int = 2,
    max_features: int | None = 20000,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    vec = TfidfVectorizer(
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        strip_accents="unicode",
        # Words such as "no" and "not" carry meaning here ("no cars"), so no stop-word list.
        token_pattern=r"(?u)\b\w+\b",
    )
    vec.fit(list(train_captions) + list(test_captions))
    return vec.transform(train_captions).tocsr(), vec.transform(test_captions).tocsr()


# A model config's ``tfidf:`` block gives these keyword arguments (their defaults are above).
register_parameters("tfidf", component_params(tfidf_features))
