"""Quality classifiers that score documents for a ``classifier_filter`` source.

Both return, for a batch of texts, the domain probability of each and the modelled FLOPs
of computing it, so the cost ledger counts scoring compute whichever classifier is used.
"""

from __future__ import annotations

import numpy as np

from annealscale.core.errors import AnnealscaleError


class HashedNgramClassifier:
    """Logistic regression on hashed word 1-2 gram features (the fastText-style quality
    filter of DCLM and FineWeb-Edu, in scikit-learn), fitted on seed examples."""

    def __init__(self, *, n_features: int = 2**18, c: float = 4.0):
        self.n_features = n_features
        self.c = c

    def _vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2"
        )

    def fit(self, positives: list[str], negatives: list[str]) -> HashedNgramClassifier:
        from sklearn.linear_model import LogisticRegression

        if not positives or not negatives:
            raise AnnealscaleError(
                "classifier_filter: needs at least one positive and one negative seed "
                f"document (got {len(positives)} and {len(negatives)})"
            )
        x = self._vectorizer().transform(positives + negatives)
        self.model_ = LogisticRegression(C=self.c, max_iter=1000).fit(
            x, [1] * len(positives) + [0] * len(negatives)
        )
        # sparse dot products: 2 FLOPs per non-zero feature per L-BFGS iteration
        self.train_flops_ = 2.0 * x.nnz * float(self.model_.n_iter_.max())
        return self

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Domain probabilities ``(n,)`` and FLOPs per text ``(n,)`` (a sparse dot)."""
        x = self._vectorizer().transform(texts)
        scores = self.model_.predict_proba(x)[:, 1]
        return scores, 2.0 * x.getnnz(axis=1).astype(np.float64)


class HfSequenceClassifier:
    """A Hugging Face ``AutoModelForSequenceClassification`` checkpoint; the score is the
    softmax probability of ``positive_label``."""

    def __init__(self, path: str, *, device: str, positive_label: int, max_length: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0]
            raise AnnealscaleError(
                f"{path}: cannot load a sequence-classification checkpoint ({first})"
            ) from None
        labels = self.model.config.num_labels
        if not 0 <= positive_label < labels:
            raise AnnealscaleError(
                f"{path}: positive_label {positive_label} is not one of its {labels} labels"
            )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.device = device
        self.positive_label = positive_label
        self.max_length = max_length
        config = self.model.config
        embedding = self.model.get_input_embeddings().weight.numel()
        self._params = sum(p.numel() for p in self.model.parameters()) - embedding
        self._attention = 2.0 * config.num_hidden_layers * config.hidden_size
        self._torch = torch

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            logits = self.model(**enc).logits.float()  # (B, labels)
        probs = torch.softmax(logits, dim=-1)[:, self.positive_label].cpu().numpy()
        lengths = enc["attention_mask"].sum(dim=1).cpu().numpy().astype(np.float64)  # (B,)
        # forward pass, Kaplan et al. 2020: 2 N + 2 n_layer n_ctx d_model per token
        flops = lengths * (2.0 * self._params + self._attention * lengths)
        return probs.astype(np.float64), flops
