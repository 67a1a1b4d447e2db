"""Vocabularies as in the notes: the K most frequent training tokens plus special tokens."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, BOS, EOS = "<PAD>", "<UNK>", "<BOS>", "<EOS>"
#: Default specials, in id order: <PAD> is 0 so padded batches are zeros.
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocabulary:
    """A fixed token ↔ id mapping; specials first, then tokens by falling frequency."""

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = SPECIALS) -> None:
        self.specials = tuple(specials)
        self.tokens = list(self.specials) + [t for t in tokens if t not in self.specials]
        self._ids = {token: index for index, token in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        max_size: int | None = None,
        min_freq: int = 1,
        specials: Sequence[str] = SPECIALS,
    ) -> Vocabulary:
        """The ``max_size`` most frequent tokens seen at least ``min_freq`` times.

        Ties are broken alphabetically so the same data always gives the same ids.
        ``max_size`` counts ordinary tokens only (the notes' K, without specials).
        """
        counts = Counter(token for sequence in sequences for token in sequence)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in specials),
                        key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size is not None else ranked, specials)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def id(self, token: str) -> int:
        """The id of ``token``; an unknown token maps to <UNK> when the vocabulary has one."""
        index = self._ids.get(token)
        if index is None:
            if UNK not in self._ids:
                raise KeyError(f"token {token!r} is not in the vocabulary and it has no {UNK}")
            return self._ids[UNK]
        return index

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def bos_id(self) -> int:
        return self._ids[BOS]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS]

    @property
    def hash(self) -> str:
        """A short content hash: two vocabularies with the same tokens in the same order share it."""
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"specials": list(self.specials), "tokens": self.tokens[len(self.specials):]})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        return cls(data["tokens"], data["specials"])
