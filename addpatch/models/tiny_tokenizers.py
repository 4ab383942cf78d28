"""Word-level tokenizers for the shipped tiny addition models.

Both split text the way Llama-3's pre-tokenizer does (a word keeps its leading space, the space
before a number is a token of its own), and differ only in how digits are grouped:

- `digits`: one token per digit, as Gemma-2 tokenizes numbers;
- `chunks`: runs of up to 3 digits from the left, as Llama-3 and OLMo-2 do (`1234` -> `123`, `4`).
"""

from __future__ import annotations

from itertools import product
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

DigitGrouping = Literal["digits", "chunks"]

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
WORD_TOKENS = ["The", " sum", " of", " and", " is", ",", " "]


def _digit_pieces(grouping: DigitGrouping) -> list[str]:
    if grouping == "digits":
        return [str(d) for d in range(10)]
    pieces = []
    for width in (1, 2, 3):
        pieces += ["".join(p) for p in product("0123456789", repeat=width)]
    return pieces


def _split_pattern(grouping: DigitGrouping) -> str:
    number = r"\p{N}" if grouping == "digits" else r"\p{N}{1,3}"
    return rf" ?\p{{L}}+|{number}| ?[^\s\p{{L}}\p{{N}}]+|\s+"


def build_tokenizer(grouping: DigitGrouping) -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer (left padding, BOS added) for the tiny adders."""
    vocab_list = SPECIAL_TOKENS + WORD_TOKENS + _digit_pieces(grouping)
    vocab = {piece: i for i, piece in enumerate(vocab_list)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(_split_pattern(grouping)), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
    return tokenizer
