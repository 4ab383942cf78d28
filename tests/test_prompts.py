"""Prompt options (templates, prefix, suffix, worked examples, chat template, answer prefix,
--no-filter):
dataset identity, exact reloads, generators, token positions, runs and bad input, through the
library and the CLI in-process on the shipped tiny model."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import duckdb
import pytest
from transformers import AutoTokenizer

from addpatch.engine.positions import layout_input, resolve_position_set, select_positions
from addpatch.experiment.datasets import create_dataset, dataset_name, load_pairs
from addpatch.models.loading import resolve_model
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import generate_pairs
from addpatch.task.templates import template_for
from cli.main import main

TEMPLATES = ("The sum of {num0} and {num1} is", "{num0} plus {num1} equals")
CHAT_TEMPLATE = (
    "{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
SMALL_RUN = ["--size", "8", "--layers", "0", "--targets", "C_1", "--batch-size", "8"]


def addpatch(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the `addpatch` command in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["addpatch", *args])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    """A copy of the shipped tiny model whose tokenizer has a simple chat template."""
    path = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(resolve_model("tiny-adder-digits").path, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


PROMPT_VARIANTS = [
    {},
    {"templates": TEMPLATES[1:]},
    {"templates": TEMPLATES},
    {"prompt_prefix": "Q: "},
    {"prompt_suffix": " ="},
    {"num_shots": 1},
    {"num_shots": 2},
    {"chat": True},
    {"num_shots": 2, "chat": True, "templates": TEMPLATES},
    {"num_shots": 2, "chat": True, "templates": TEMPLATES, "shot_turns": False},
    {"answer_prefix": " The answer is"},
    {"answer_prefix": " The sum is"},
    {"answer_prefix": " The answer is", "chat": True},
    {"answer_prefix": " The answer is", "num_shots": 2, "chat": True},
]


@pytest.fixture(scope="module")
def variant_store(tmp_path_factory) -> tuple[Store, list[int]]:
    """One store holding a dataset of every prompt variant (same kind, K, D, size and seed);
    tests read it, and the one that edits it edits a copy."""
    store = Store.open(tmp_path_factory.mktemp("variants") / "store", create=True)
    ids = []
    for variant in PROMPT_VARIANTS:
        for kind in ("random", "one_digit"):
            task = AdditionTask(2, 2, **variant)
            ids.append(create_dataset(store, kind=kind, task=task, size=12, seed=3).id)
    return store, ids


def test_datasets_with_different_prompts_never_share_an_id(variant_store):
    store, ids = variant_store
    assert len(set(ids)) == len(ids)
    # what the model is shown: the stored text, and the chat template around it (--chat) with
    # the answer prefix after it (the stored text ends with the answer prefix without --chat)
    # and the worked examples as turns of their own or inside the user turn
    with store.connect(read_only=True) as conn:
        prompts = conn.execute(
            "SELECT dataset_id, d.chat, d.answer_prefix, coalesce(d.shot_turns, false), "
            "list(base_prompt || '|' || cf_prompt ORDER BY example_id) "
            "FROM examples JOIN datasets AS d ON d.id = dataset_id GROUP BY ALL"
        ).fetchall()
    by_prompts: dict[tuple, int] = {}
    for dataset_id, chat, answer_prefix, turns, texts in prompts:
        shown = (chat, answer_prefix if chat else None, turns, tuple(texts))
        assert shown not in by_prompts, f"datasets {dataset_id} and {by_prompts[shown]}"
        by_prompts[shown] = dataset_id
    assert len(by_prompts) == len(ids)
    # the same arguments find the same dataset again
    again = create_dataset(
        store, kind="random", task=AdditionTask(2, 2, num_shots=1), size=12, seed=3
    )
    assert not again.created and again.id in ids


def test_plain_prompt_keeps_its_old_dataset_name():
    plain = AdditionTask(2, 2, templates=(template_for(2),))
    assert dataset_name("random", plain, 256, 0, {}) == "random-k2-d2-n256-s0"
    assert dataset_name("random", AdditionTask(2, 2, num_shots=1), 256, 0, {}) != (
        "random-k2-d2-n256-s0"
    )


def test_plain_and_older_prompt_datasets_keep_their_names_without_an_answer_prefix():
    for variant in PROMPT_VARIANTS:
        if "answer_prefix" in variant:
            continue
        task = AdditionTask(2, 2, **variant)
        # the name's hash as before --answer-prefix existed: templates, prefix and suffix only
        settings = task.prompt_settings
        text = {k: settings[k] for k in ("templates", "prefix", "suffix")}
        digest = hashlib.sha256(json.dumps(text, sort_keys=True).encode()).hexdigest()[:10]
        plain = {"templates": [TEMPLATES[0]], "prefix": "", "suffix": ""}
        name = dataset_name("random", task, 12, 3, {})
        assert name.endswith(f"-t{digest}") if text != plain else "-t" not in name
    prefilled = AdditionTask(2, 2, answer_prefix=" The answer is")
    assert dataset_name("random", prefilled, 256, 0, {}) != "random-k2-d2-n256-s0"
    assert dataset_name("random", AdditionTask(2, 2), 256, 0, {}) == "random-k2-d2-n256-s0"


def test_every_stored_prompt_equals_its_reload(variant_store):
    store, ids = variant_store
    for dataset_id in ids:
        with store.connect(read_only=True) as conn:
            stored = conn.execute(
                "SELECT base_prompt, cf_prompt FROM examples WHERE dataset_id = ? "
                "ORDER BY example_id",
                [dataset_id],
            ).fetchall()
            [(chat, answer_prefix, turns)] = conn.execute(
                "SELECT chat, answer_prefix, shot_turns FROM datasets WHERE id = ?", [dataset_id]
            ).fetchall()
        task, _, pairs = load_pairs(store, dataset_id)
        assert [(p.base.prompt, p.counterfactual.prompt) for p in pairs] == stored
        # worked examples under --chat come back as turns, or inside the user turn, as stored
        assert task.shot_turns == bool(turns) == (chat and task.num_shots > 0 and turns is True)
        assert all(p.base.in_turns == task.shot_turns for p in pairs)
        # the answer prefix comes back; without --chat it ends the stored prompt
        assert answer_prefix == (task.answer_prefix or None)
        if answer_prefix and not chat:
            assert all(b.endswith(answer_prefix) and c.endswith(answer_prefix) for b, c in stored)
        if answer_prefix and chat:
            assert not any(answer_prefix in b for b, _ in stored)


def test_reload_keeps_the_python_api_prefix(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    task = AdditionTask(2, 2, prompt_prefix="Q: ", prompt_suffix=" A:")
    info = create_dataset(store, kind="random", task=task, size=6, seed=0)
    reloaded, _, pairs = load_pairs(store, info.id)
    assert (reloaded.prompt_prefix, reloaded.prompt_suffix) == ("Q: ", " A:")
    assert all(p.base.prompt.startswith("Q: ") and p.base.prompt.endswith(" A:") for p in pairs)


def test_reload_refuses_a_prompt_it_cannot_reproduce(variant_store, tmp_path):
    from addpatch.errors import StoreError

    shared, ids = variant_store
    shutil.copytree(shared.root, tmp_path / "edited")
    store = Store.open(tmp_path / "edited")
    with store.connect() as conn:
        conn.execute(
            "UPDATE examples SET base_prompt = 'edited' WHERE dataset_id = ? AND example_id = 0",
            [ids[0]],
        )
    with pytest.raises(StoreError, match="differs from its rebuild"):
        load_pairs(store, ids[0])


@pytest.mark.parametrize("digits", [1, 2])
def test_shots_are_distinct_worked_examples_never_equal_to_the_query(digits):
    task = AdditionTask(2, digits, templates=TEMPLATES, num_shots=3)
    pairs = generate_pairs("random", task, 150, 7)
    for pair in pairs:
        shots = pair.base.shots
        assert shots == pair.counterfactual.shots and len(set(shots)) == 3
        assert pair.base.numbers not in shots and pair.counterfactual.numbers not in shots
        assert all(len(str(n)) == digits for shot in shots for n in shot)
        for shot in shots:
            worked = pair.base.template.format(num0=shot[0], num1=shot[1]) + f" {sum(shot)}.\n"
            assert worked in pair.base.prompt
        assert pair.base.prompt.endswith(
            pair.base.template.format(num0=pair.base.numbers[0], num1=pair.base.numbers[1])
        )
    # the shots have their own stream: the pairs' addends are those without shots
    plain = generate_pairs("random", AdditionTask(2, digits, templates=TEMPLATES), 150, 7)
    assert [p.base.numbers for p in plain] == [p.base.numbers for p in pairs]


@pytest.mark.parametrize(("kind", "options"), [("one_digit", {}), ("carry_flip", {"carry": 1})])
def test_minimal_pair_generators_keep_the_base_template(kind, options):
    task = AdditionTask(2, 2, templates=TEMPLATES)
    pairs = generate_pairs(kind, task, 200, 1, **options)
    assert {p.base.template for p in pairs} == set(TEMPLATES)  # both templates are drawn
    assert all(p.base.template == p.counterfactual.template for p in pairs)


def test_random_pairs_draw_the_counterfactual_template_on_its_own():
    pairs = generate_pairs("random", AdditionTask(2, 2, templates=TEMPLATES), 200, 1)
    assert any(p.base.template != p.counterfactual.template for p in pairs)


def _names(layout, prefix: str) -> list[str]:
    return [n for n in layout.canonical if n.startswith(prefix)]


@pytest.mark.parametrize("shot_turns", [True, False])
def test_prefix_shots_and_chat_tokens_are_positions_of_their_own(chat_model, shot_turns):
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    numbers = [23, 45]
    plain = layout_input(tokenizer, AdditionTask(2, 2).make_input(numbers))
    task = AdditionTask(2, 2, prompt_prefix="Add: ", num_shots=2, chat=True, shot_turns=shot_turns)
    full = layout_input(tokenizer, task.make_input(numbers, shots=[[12, 34], [56, 78]]))
    # the query's tokens keep the plain prompt's names, in order
    assert list(full.query) == [n for n in plain.canonical if n != "bos"]
    for name in ("a0.d0", "a0.d1", "a1.d0", "a1.d1"):
        assert full.tokens[full.index(name)] == plain.tokens[plain.index(name)]
    # the rest has names of its own kind: prefix, each worked example, the chat wrapper
    assert _names(full, "p.") and _names(full, "s0.") and _names(full, "s1.")
    assert _names(full, "c0.") and _names(full, "c1.")
    assert not set(full.query) & {n for n in full.canonical if n[0] in "psc"}
    shot_text = "".join(full.tokens[full.index(n)] for n in _names(full, "s0."))
    assert "12 and 34 is" in shot_text and "46" in shot_text and "56" not in shot_text
    # as turns, each example is a user turn and the assistant's reply; inline, the examples
    # and their answers are in the query's user turn
    if shot_turns:
        messages = [
            {"role": "user", "content": "Add: The sum of 12 and 34 is"},
            {"role": "assistant", "content": "46"},
            {"role": "user", "content": "The sum of 56 and 78 is"},
            {"role": "assistant", "content": "134"},
            {"role": "user", "content": "The sum of 23 and 45 is"},
        ]
    else:
        inline = "Add: The sum of 12 and 34 is 46.\nThe sum of 56 and 78 is 134.\n"
        messages = [{"role": "user", "content": inline + "The sum of 23 and 45 is"}]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer(expected, add_special_tokens=False).input_ids == list(full.token_ids)
    # the last token is the chat template's generation prompt
    assert full.canonical[full.index("last")].startswith("c1.")
    # `query` is the query's tokens and `last`; `all` is every token
    assert select_positions(full, "query", 2, 2) == list(full.query) + ["last"]
    assert select_positions(full, "all", 2, 2) == list(full.canonical)
    assert select_positions(plain, "query", 2, 2) == [n for n in plain.canonical if n != "bos"]


@pytest.mark.parametrize("chat", [False, True])
def test_answer_prefix_tokens_are_positions_of_their_own_at_the_end(chat_model, chat):
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    numbers = [23, 45]
    bare = layout_input(tokenizer, AdditionTask(2, 2, chat=chat).make_input(numbers))
    task = AdditionTask(2, 2, chat=chat, answer_prefix=" sum is")  # words the tokenizer has
    full = layout_input(tokenizer, task.make_input(numbers))
    # the query keeps its names; the answer prefix's tokens are r.0, r.1, ... and end the prompt
    assert full.query == bare.query
    reply = _names(full, "r.")
    assert reply and full.canonical[-len(reply) :] == tuple(reply)
    assert "".join(full.tokens[full.index(n)] for n in reply) == " sum is"
    assert full.canonical[full.index("last")] == reply[-1]
    assert full.token_ids[: len(bare.token_ids)] == bare.token_ids  # after the generation prompt
    if chat:
        assert _names(full, "c1.")
    # `query`: the query's tokens and `last` (the answer prefix's last token), never the rest
    assert select_positions(full, "query", 2, 2) == list(full.query) + ["last"]
    assert not [n for n in full.query if n.startswith("r.")]
    assert resolve_position_set("auto", task) == "query"


def test_no_filter_run_is_recorded_and_patches_every_pair(monkeypatch, capsys, tmp_path):
    store = tmp_path / "s"
    code, out, err = addpatch(
        monkeypatch, capsys, "run", *SMALL_RUN, "--shots", "1", "--no-filter", "--store", str(store)
    )
    assert code == 0, err
    assert "every pair is patched" in out
    code, out, err = addpatch(monkeypatch, capsys, "run", *SMALL_RUN, "--store", str(store))
    assert code == 0, err
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    runs = conn.execute(
        "SELECT r.id, r.num_examples, r.provenance_json, d.size, d.num_shots, r.config_sha256 "
        "FROM runs r JOIN datasets d ON d.id = r.dataset_id ORDER BY r.id"
    ).fetchall()
    positions = conn.execute("SELECT name FROM run_positions WHERE run_id = 1").fetchall()
    conn.close()
    (_, examples, provenance, size, shots, sha), (_, _, plain_prov, _, _, plain_sha) = runs
    assert examples == size == 8 and shots == 1
    assert json.loads(provenance)["filtered"] is False
    assert json.loads(plain_prov)["filtered"] is True and sha != plain_sha
    # the default positions of a prompt with worked examples are the query's, not the shots'
    assert positions and not [n for (n,) in positions if n.startswith(("s", "p.", "c"))]
    code, out, _ = addpatch(monkeypatch, capsys, "store", "status", "--store", str(store))
    assert "all (--no-filter)" in out and "shots=1" in out
    report = (store / "reports" / "run-1" / "report.html").read_text()
    assert "--no-filter" in report


def test_chat_run_wraps_the_prompt_in_the_chat_template(monkeypatch, capsys, tmp_path, chat_model):
    store = tmp_path / "s"
    args = ["run", "--model", str(chat_model), *SMALL_RUN, "--chat", "--no-filter"]
    code, out, err = addpatch(monkeypatch, capsys, *args, "--store", str(store))
    assert code == 0, err
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    names = [
        n for (n,) in conn.execute("SELECT name FROM run_positions ORDER BY position").fetchall()
    ]
    chat = conn.execute("SELECT chat, name FROM datasets").fetchone()
    conn.close()
    assert chat[0] is True and chat[1].endswith("-chat")
    assert names[-1] == "last" and "a0.t1" in names and not [n for n in names if n[0] == "c"]


@pytest.fixture(scope="module")
def bad_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("bad") / "store"
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["addpatch", "run", *SMALL_RUN, "--store", str(store)])
    try:
        main()
    except SystemExit as stop:  # the CLI always exits with its code
        assert not stop.code, stop.code
    finally:
        mp.undo()
    return store


BAD = [
    (["run", "--template", "The sum of {num1} and {num2} is"], "must use exactly {num0}..{num1}"),
    (["run", "--template", "{num0} plus {num1} plus {num2} is"], "must use exactly"),
    (["run", "--addends", "3", "--template", "{num0} and {num1} is"], "for 3 addends"),
    (["sweep", "--models", "tiny-adder-digits", "--template", "{num1} is"], "must use exactly"),
    (["dataset", "--template", "no numbers"], "must use exactly"),
    (
        ["run", "--model", "tiny-adder-chunks-d2", "--template", "{num0}{num1} is"],
        "gives no token for digit",
    ),
    (
        ["dataset", "--model", "tiny-adder-chunks-d2", "--template", "{num0}{num1} is"],
        "gives no token for digit",
    ),
    (["run", "--chat"], "needs a tokenizer with a chat template"),
    (["sweep", "--models", "tiny-adder-digits", "--chat"], "needs a tokenizer with a chat"),
    (["dataset", "--chat"], "needs a tokenizer with a chat template"),
    (["run", "--shots", "-1"], "shots must be 0.."),
    (["sweep", "--models", "tiny-adder-digits", "--shots", "-1"], "shots must be 0.."),
    (["dataset", "--shots", "-1"], "shots must be 0.."),
    (["run", "--answer-prefix", "The answer is 1"], "--answer-prefix must hold no digit"),
    (["sweep", "--models", "tiny-adder-digits", "--answer-prefix", "Sum: 4"], "no digit"),
    (["dataset", "--chat", "--answer-prefix", "2"], "--answer-prefix must hold no digit"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_prompt_options_are_one_error_line_and_leave_the_store(
    monkeypatch, capsys, bad_store, args, message
):
    before = snapshot(bad_store)
    code, _, err = addpatch(monkeypatch, capsys, *args, "--store", str(bad_store))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert message in lines[0]
    assert snapshot(bad_store) == before


def test_no_pair_kept_shows_what_the_model_answered(monkeypatch, capsys, tmp_path):
    # the shipped adder learned only the plain prompt: worked examples throw it off
    args = ["dataset", "--digits", "1", "--shots", "2", "--size", "8"]
    code, _, err = addpatch(monkeypatch, capsys, *args, "--store", str(tmp_path / "s"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "answered none of the 8 pairs" in lines[0]
    assert lines[0].count("(want ") == 5 and "--shots" in lines[0] and "--chat" in lines[0]


def test_sweep_takes_the_prompt_options_and_no_filter(monkeypatch, capsys, tmp_path):
    store = tmp_path / "s"
    args = ["sweep", "--models", "tiny-adder-digits", "--digits", "2", *SMALL_RUN]
    code, out, err = addpatch(
        monkeypatch,
        capsys,
        *args,
        *("--prefix", "Q: ", "--answer-prefix", " Sum:", "--no-filter", "--store", str(store)),
    )
    assert code == 0, err
    assert "unfiltered" in out
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    run = conn.execute(
        "SELECT r.num_examples, r.provenance_json, d.prompt_prefix || d.answer_prefix, d.size "
        "FROM runs r "
        "JOIN datasets d ON d.id = r.dataset_id"
    ).fetchone()
    names = [n for (n,) in conn.execute("SELECT name FROM run_positions").fetchall()]
    answered = conn.execute("SELECT count(*) FROM filter_results").fetchone()[0]
    conn.close()
    examples, provenance, prefix, size = run
    assert examples == size == 8 and prefix == "Q:  Sum:" and answered == 0
    assert json.loads(provenance)["filtered"] is False
    # auto: the query's tokens and `last`, not the prefix's or the answer prefix's
    assert names and not [n for n in names if n.startswith(("p.", "r."))]


@pytest.mark.parametrize("chat", [False, True])
def test_engine_equals_naive_loop_on_few_shot_prompts(chat):
    from addpatch.engine.patching import PatchEngine, PromptPair
    from tests.conftest import tiny_model
    from tests.naive_rows import naive_answers, row_key

    model, tokenizer = tiny_model("llama", "digits")
    tokenizer.chat_template = CHAT_TEMPLATE
    task = AdditionTask(
        2, 2, templates=TEMPLATES, prompt_prefix="Q: ", num_shots=2, chat=chat, answer_prefix=" A:"
    )
    pairs = [
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in enumerate(generate_pairs("one_digit", task, 2, 5))
    ]
    # one position of each kind: prefix, worked examples, chat wrapper, answer prefix, query, last
    canonical = pairs[0].base.canonical
    kinds = ("p.", "s0.", "s1.", "c0.", "c1.", "r.") if chat else ("p.", "s0.", "s1.", "r.")
    positions = [next(n for n in canonical if n.startswith(k)) for k in kinds]
    positions += ["a0.d1", "a1.d0", "w1.0", "last"]
    engine = PatchEngine(model, tokenizer)
    compared = 0
    tables = engine.sweep(pairs, list(range(-1, engine.num_layers)), positions, 3)
    rows = [row for table in tables for row in table.to_pylist()]
    naive = naive_answers(model, tokenizer, pairs, rows, positions, 3)
    for row in rows:
        expected = naive[row_key(row)]
        assert row["token_ids"] == expected.tokens, row
        assert row["top_logprobs"] == pytest.approx(expected.top_logprobs, abs=1e-4)
        compared += 1
    assert compared >= len(positions) * (engine.num_layers + 1)
