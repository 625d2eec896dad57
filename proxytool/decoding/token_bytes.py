"""A tokenizer's vocabulary as byte strings: what each token writes, and the canonical tokenization of bytes.

Cross-tokenizer proxy-tuning compares two tokenizers on the text itself, so the text is bytes (a token
may hold part of a multi-byte UTF-8 character). Byte-level BPE tokens (GPT-2, Qwen, SmolLM2, Llama 3)
map through the byte-to-unicode alphabet; SentencePiece pieces map ``▁`` to a space and ``<0xNN>``
to that byte. Special tokens write no bytes (``None``).
"""

import bisect
import re
from functools import lru_cache

from proxytool.errors import ProxyToolError


class TokenBytes:
    """Each token id's bytes, a sorted index for prefix queries, and :meth:`encode` for bytes."""

    def __init__(self, tokenizer, name: str = "the tokenizer"):
        self.tokenizer = tokenizer
        self.name = name
        self.special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.special_text = {i: pieces[i] for i in self.special if i < len(pieces)}  # e.g. "<|im_end|>"
        to_bytes = _piece_decoder(tokenizer)
        self.bytes_of: list[bytes | None] = [
            None if i in self.special or piece is None else to_bytes(piece) for i, piece in enumerate(pieces)
        ]
        ordered = sorted((b, i) for i, b in enumerate(self.bytes_of) if b)
        self._sorted = [b for b, _ in ordered]
        self._ids = [i for _, i in ordered]
        self._single = {b: i for b, i in reversed(ordered) if len(b) == 1}  # one id per lone byte
        self._exact = {}
        for b, i in ordered:
            self._exact.setdefault(b, []).append(i)
        self.max_len = max((len(b) for b in self._sorted), default=0)
        self.with_prefix = lru_cache(maxsize=1 << 16)(self._with_prefix)
        self.encode = lru_cache(maxsize=1 << 16)(self._encode)  # per vocabulary: the cache dies with it

    def _with_prefix(self, prefix: bytes) -> tuple[int, ...]:
        """Ids of the tokens whose bytes start with ``prefix`` (every text token for b"")."""
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = lo
        while hi < len(self._sorted) and self._sorted[hi].startswith(prefix):
            hi += 1
        return tuple(self._ids[lo:hi])

    def exactly(self, data: bytes) -> list[int]:
        """Ids of the tokens that write exactly ``data``."""
        return self._exact.get(data, [])

    def prefixes_of(self, data: bytes) -> list[int]:
        """Ids of the tokens that write a non-empty prefix of ``data`` (``data`` itself included)."""
        return [i for n in range(1, len(data) + 1) for i in self.exactly(data[:n])]

    def single_byte(self, byte: bytes) -> int:
        """The token that writes this one byte."""
        if byte not in self._single:
            raise ProxyToolError(f"{self.name} has no token for the byte 0x{byte.hex()}; it cannot write any text")
        return self._single[byte]

    def text_of(self, ids) -> bytes:
        """The bytes ``ids`` write (special tokens write none)."""
        return b"".join(self.bytes_of[i] or b"" for i in ids)

    def _encode(self, data: bytes) -> tuple[int, ...]:
        """The canonical tokenization of ``data`` (:meth:`encode`, cached): the tokenizer's own on each run
        of whole characters, and each byte that is no character (a split character) as its single-byte token."""
        ids: list[int] = []
        # bytes that are no character (a split character, invalid UTF-8) become lone surrogates: one token each
        for run in re.split("([\udc80-\udcff])", data.decode("utf-8", errors="surrogateescape")):
            if len(run) == 1 and "\udc80" <= run <= "\udcff":
                ids.append(self.single_byte(run.encode("utf-8", errors="surrogateescape")))
            elif run:
                ids.extend(self.tokenizer(run, add_special_tokens=False)["input_ids"])
        if self.text_of(ids) != data:
            raise ProxyToolError(
                f"{self.name} does not write text back as it reads it ({data[:40]!r} changes when tokenized): "
                "cross-tokenizer proxy-tuning needs a tokenizer without normalisation or an added prefix space"
            )
        return tuple(ids)


def _piece_decoder(tokenizer):
    """piece string -> bytes, for byte-level BPE or SentencePiece vocabularies."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    kinds = {type(getattr(backend, part, None)).__name__ for part in ("decoder", "pre_tokenizer")}
    if "ByteLevel" in kinds or _json_mentions(backend, "ByteLevel"):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {char: byte for byte, char in bytes_to_unicode().items()}

        def byte_level(piece: str) -> bytes:
            try:
                return bytes(to_byte[c] for c in piece)
            except KeyError:  # an added token outside the byte alphabet: its text
                return piece.encode("utf-8")

        return byte_level

    def sentencepiece(piece: str) -> bytes:
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    return sentencepiece


def _json_mentions(backend, name: str) -> bool:
    try:
        return f'"{name}"' in backend.to_str()
    except Exception:  # a tokenizer without a serialisable backend: not byte-level
        return False
