"""The answers a model got wrong are shown with each prompt as the model saw it: under --chat
in the tokenizer's chat template, with the answer prefix after it (long ones shortened)."""

from __future__ import annotations

from addpatch.experiment.filtering import SHOWN_HEAD, SHOWN_TAIL, shortened
from tests.test_prompts import addpatch, chat_model  # noqa: F401  (chat_model: a fixture)


def test_wrong_answers_show_the_chat_template_the_model_saw(
    monkeypatch,
    capsys,
    tmp_path,
    chat_model,  # noqa: F811
):
    args = ["dataset", "--model", str(chat_model), "--chat", "--answer-prefix", " Sum:"]
    code, out, err = addpatch(monkeypatch, capsys, *args, "--size", "8", "--store", str(tmp_path))
    shown = [line for line in (out + err).splitlines() if "(want " in line]
    assert shown, (code, out, err)
    samples = [s for line in shown for s in line.split("(want ")[:-1]]
    assert len(samples) == 5, shown
    for sample in samples:  # the template's turn and generation prompt, then the answer prefix
        assert "User: " in sample and "Assistant: Sum:' -> " in sample, sample


def test_long_prompts_keep_their_start_and_end():
    assert shortened("The sum of 1 and 2 is") == "The sum of 1 and 2 is"
    long = "S" * 200 + "The sum of 1 and 2 is"
    short = shortened(long)
    assert short.startswith("S" * SHOWN_HEAD + " ... ") and short.endswith("The sum of 1 and 2 is")
    assert len(short) == SHOWN_HEAD + 5 + SHOWN_TAIL
