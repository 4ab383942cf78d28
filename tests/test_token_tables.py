"""addpatch.engine.token_tables on the shipped tokenizers (and Qwen3's real one, with chat)."""

from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from addpatch.engine.positions import layout_input
from addpatch.engine.token_tables import number_tokens, part_of, positions_table
from addpatch.errors import BadInput
from addpatch.models.tiny_tokenizers import build_tokenizer
from addpatch.task.addition import AdditionTask
from tests.test_real_tokenizers import real_tokenizer

TASK = AdditionTask(num_addends=2, num_digits=2)


@pytest.mark.parametrize(
    ("grouping", "expected"),
    [
        ("digits", [(7, "7", 1, "1"), (42, "4|2", 2, "1+1"), (1234, "1|2|3|4", 4, "1+1+1+1")]),
        ("chunks", [(7, "7", 1, "1"), (42, "42", 1, "2"), (1234, "123|4", 2, "3+1")]),
    ],
)
def test_number_tokens_on_the_shipped_tokenizers(grouping, expected):
    table = number_tokens(build_tokenizer(grouping), [7, 42, 1234])
    assert table.rows() == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3_1", [(5, "5", 1, "1"), (42, "42", 1, "2"), (1234, "123|4", 2, "3+1")]),
        ("cl100k", [(5, "5", 1, "1"), (42, "42", 1, "2"), (1234, "123|4", 2, "3+1")]),
        ("qwen3", [(5, "5", 1, "1"), (42, "4|2", 2, "1+1"), (1234, "1|2|3|4", 4, "1+1+1+1")]),
        ("gemma3", [(5, "5", 1, "1"), (42, "4|2", 2, "1+1"), (1234, "1|2|3|4", 4, "1+1+1+1")]),
    ],
)
def test_number_tokens_on_the_real_tokenizers(name, expected):
    assert (
        number_tokens(real_tokenizer(name), [5, 42, 1234], template="x {num0} y").rows() == expected
    )


def test_number_tokens_show_a_space_glued_to_the_number():
    """A BPE token ` 23` (GPT-2 style) belongs to the addend and is shown with its space."""
    vocab = {"<bos>": 0, "<unk>": 1, "x": 2, " 23": 3, " 4": 4, "5": 5, " y": 6}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r" 23| ?\d| ?[a-z]+"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    table = number_tokens(tokenizer, [23, 45], template="x {num0} y")
    assert table.rows() == [(23, "·23", 1, "2"), (45, "·4|5", 2, "1+1")]


def test_number_tokens_refuse_bad_input():
    tokenizer = build_tokenizer("digits")
    with pytest.raises(BadInput, match="non-negative integers"):
        number_tokens(tokenizer, [-3])
    with pytest.raises(BadInput, match="must use"):
        number_tokens(tokenizer, [3], template="no numbers")


def test_positions_table_of_the_plain_prompt():
    layout = layout_input(build_tokenizer("chunks"), TASK.make_input([23, 45]))
    table = positions_table(layout)
    assert table["name"].to_list() == list(layout.canonical)
    assert table["index"].to_list() == list(range(len(layout.tokens)))
    rows = {r["name"]: r for r in table.iter_rows(named=True)}
    assert rows["bos"]["part"] == "special token" and not rows["bos"]["in_query"]
    assert rows["a0.t0"] == {
        "index": 5,
        "token": "23",
        "name": "a0.t0",
        "aliases": "a0.d0, a0.d1",
        "part": "addend 0",
        "in_query": True,
    }
    assert rows["w0.1"]["token"] == "·sum" and rows["w0.1"]["part"] == "template"
    assert rows["w2.0"]["aliases"] == "last"


def test_positions_table_names_every_part_of_a_chat_prompt_with_shots():
    task = AdditionTask(
        num_addends=2,
        num_digits=2,
        prompt_prefix="Add.\n",
        num_shots=1,
        chat=True,
        answer_prefix="The answer is",
    )
    layout = layout_input(real_tokenizer("qwen3"), task.make_input([23, 45], shots=[[12, 34]]))
    table = positions_table(layout)
    parts = table["part"].to_list()
    in_order = [p for i, p in enumerate(parts) if i == 0 or parts[i - 1] != p]
    assert in_order == [
        "chat template (before)",
        "prefix",
        "worked example 0",
        "template",
        "addend 0",
        "template",
        "addend 1",
        "template",
        "chat template (after)",
        "answer prefix",
    ]
    in_query = table.filter(table["in_query"])["name"].to_list()
    assert in_query == list(layout.query)
    last = table.filter(table["aliases"].str.contains("last"))
    assert last["part"].to_list() == ["answer prefix"]


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("special3", "special token"),
        ("s2.0", "worked example 2"),
        ("c1.4", "chat template (after)"),
        ("r.0", "answer prefix"),
        ("p.1", "prefix"),
        ("a3.t2", "addend 3"),
    ],
)
def test_part_of_each_kind_of_name(name, part):
    assert part_of(name) == part


def test_part_of_refuses_an_alias():
    with pytest.raises(BadInput, match="not a canonical position name"):
        part_of("a0.d1")
