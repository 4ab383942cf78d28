"""Trained subspace interventions (DAS): the fast trainer against the plain loop, full rank
against full-vector patching, the held-out split, the store's records, resume and bad input."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from addpatch.das.examples import label_token_ids, make_examples
from addpatch.das.plan import DasOptions
from addpatch.das.split import make_split
from addpatch.das.subspace import TrainableSubspace, interchange, is_orthonormal
from addpatch.das.training import TrainSettings, train_plain, train_subspace
from addpatch.engine.patching import PatchEngine, PromptPair
from addpatch.engine.positions import layout_input
from addpatch.errors import BadInput
from addpatch.models.loading import load_model, resolve_model
from addpatch.pipeline import RunSpec, run_experiment
from addpatch.store.store import Store
from addpatch.task.addition import AdditionTask
from addpatch.task.generators import GENERATORS
from addpatch.task.labels import label_many
from tests.store_files import store_snapshot


@pytest.fixture(scope="module")
def adder():
    model, tokenizer = load_model(
        resolve_model("tiny-adder-digits"), torch.device("cpu"), torch.float32, False
    )
    task = AdditionTask(num_addends=2, num_digits=2)
    pairs = GENERATORS["random"](task, 64, 3)
    prompt_pairs = [
        PromptPair(i, layout_input(tokenizer, p.base), layout_input(tokenizer, p.counterfactual))
        for i, p in enumerate(pairs)
    ]
    labels = {i: v for i, (_, v) in enumerate(label_many(task, pairs, "C_1"))}
    return model, tokenizer, prompt_pairs, labels


def test_interchange_swaps_only_the_subspace_and_full_rank_is_the_counterfactual():
    generator = torch.Generator().manual_seed(0)
    base, source = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    basis = TrainableSubspace(8, 3, seed=1).basis().detach()
    assert is_orthonormal(basis)
    patched = interchange(base, source, basis)
    assert torch.allclose(patched @ basis.T, source @ basis.T, atol=1e-5)  # inside: the cf's
    outside = torch.eye(8) - basis.T @ basis  # projector on the complement
    assert torch.allclose(patched @ outside, base @ outside, atol=1e-5)  # outside: the base's
    full = TrainableSubspace(8, 8, seed=2).basis().detach()
    assert torch.allclose(interchange(base, source, full), source, atol=1e-5)


def test_same_seed_same_subspace_whatever_the_global_rng():
    torch.manual_seed(1)
    first = TrainableSubspace(64, 4, seed=0).basis()
    torch.manual_seed(2)
    again = TrainableSubspace(64, 4, seed=0).basis()
    assert torch.equal(first, again)
    assert not torch.equal(first, TrainableSubspace(64, 4, seed=1).basis())


def test_label_tokens_are_what_the_model_answers(adder):
    model, tokenizer, pairs, _ = adder
    engine = PatchEngine(model, tokenizer)
    answers = engine.generate([p.base for p in pairs[:16]], 5)
    for pair, (tokens, text) in zip(pairs[:16], answers, strict=True):
        expected = label_token_ids(tokenizer, pair.base, int(text))
        assert expected == (*tokens, tokenizer.eos_token_id)  # the model's own answer + EOS


@pytest.mark.parametrize(("layer", "unit"), [(0, "a1.d1+last"), (1, "last"), (-1, "a0.d1")])
def test_fast_trainer_equals_the_plain_loop(adder, layer, unit):
    model, tokenizer, pairs, labels = adder
    examples = make_examples(tokenizer, pairs[:40], labels)
    settings = TrainSettings(k=4, epochs=2, batch_size=16, seed=5)
    fast = train_subspace(model, tokenizer.pad_token_id, examples, layer, unit, settings)
    plain = train_plain(model, tokenizer.pad_token_id, examples, layer, unit, settings)
    assert len(fast.losses) == len(plain.losses) == 6
    assert fast.losses == pytest.approx(plain.losses, abs=1e-4)
    assert torch.allclose(fast.basis, plain.basis, atol=1e-4)
    assert fast.losses[0] != fast.losses[-1]  # it trained
    assert fast.train_iia == pytest.approx(plain.train_iia)


def test_full_rank_subspace_patches_like_the_whole_vector(adder):
    model, tokenizer, pairs, _ = adder
    engine = PatchEngine(model, tokenizer)
    full = TrainableSubspace(64, 64, seed=3).basis().detach()
    positions = ["a0.d1", "a1.d1+last", "last"]
    whole = list(engine.sweep(pairs[:24], [-1, 0, 1, 2], positions, 5))[0]
    das = list(engine.sweep(pairs[:24], [-1, 0, 1, 2], positions, 5, basis=full))[0]
    assert whole.num_rows == das.num_rows > 0
    assert das.column("answer").to_pylist() == whole.column("answer").to_pylist()
    assert das.column("token_ids").to_pylist() == whole.column("token_ids").to_pylist()
    zero = list(engine.sweep(pairs[:24], [1], ["last"], 5, basis=torch.zeros(1, 64)))[0]
    base = engine.generate([p.base for p in pairs[:24]], 5)
    by_example = dict(
        zip(zero.column("example_id").to_pylist(), zero.column("text").to_pylist(), strict=True)
    )
    assert all(
        by_example[p.example_id] == text for p, (_, text) in zip(pairs[:24], base, strict=True)
    )


def test_split_is_seeded_disjoint_and_covers_every_example():
    split = make_split(list(range(100)), seed=4, test_share=0.2)
    train, test = split.ids("train", list(range(100))), split.ids("test", list(range(100)))
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    assert make_split(list(range(100)), seed=4, test_share=0.2) == split
    assert make_split(list(range(100)), seed=5, test_share=0.2) != split
    with pytest.raises(BadInput, match="test-share"):
        make_split(list(range(10)), seed=0, test_share=1.0)


SPEC = RunSpec(
    size=48,
    layers="1",
    positions="last,a1.d1+last",
    targets=["C_1"],
    method="das",
    das=DasOptions(ks=(1, 64), epochs=1, batch_size=16, control=True),
    interventions_only=True,
)


def _rows(store: Store, sql: str) -> list[tuple]:
    with store.connect(read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_das_run_stores_subspaces_and_held_out_outputs_and_resumes(tmp_path):
    root = tmp_path / "store"
    outcome = run_experiment(root, SPEC)
    store = outcome.store
    subspaces = _rows(
        store,
        "SELECT subspace_id, target, control, k, layer, position, train_examples, "
        "test_examples, path FROM subspaces ORDER BY subspace_id",
    )
    assert len(subspaces) == 2 * 2 * 2  # (own, shuffled) x k (1, 64) x 2 units
    assert {(s[2], s[3]) for s in subspaces} == {
        (None, 1),
        (None, 64),
        ("shuffled", 1),
        ("shuffled", 64),
    }
    train_n, test_n = subspaces[0][6], subspaces[0][7]
    assert train_n + test_n == 48 and test_n == round(48 * 0.2)
    for row in subspaces:
        assert (root / row[8]).is_file()
    # held-out outputs only: every stored example is a test example of the dataset's split
    parts = dict(_rows(store, "SELECT example_id, part FROM dataset_splits"))
    stored = {r[0] for r in _rows(store, "SELECT DISTINCT example_id FROM patched_outputs")}
    assert stored and all(parts[i] == "test" for i in stored)
    keys = _rows(
        store,
        "SELECT DISTINCT method, k, trained_for, subspace_id FROM patched_outputs ORDER BY 4",
    )
    assert [k[3] for k in keys] == list(range(8)) and {k[0] for k in keys} == {"das"}
    # the same SQL scores it: one row per subspace cell
    with store.connect(read_only=True) as conn:
        cells = conn.execute(
            "SELECT subspace_id, k, trained_for, control, n FROM iia_cells(NULL, ['C_1'])"
        ).fetchall()
    assert len(cells) == 8 and {c[4] for c in cells} == {test_n}
    # its baseline counts the same held-out examples as its IIA, not the whole dataset
    baseline = _rows(
        store,
        "SELECT avg(CASE WHEN l.label = e.base_sum THEN 1.0 ELSE 0.0 END) FROM labels l "
        "JOIN examples e USING (dataset_id, example_id) JOIN dataset_splits s "
        "USING (dataset_id, example_id) WHERE l.target = 'C_1' AND s.part = 'test'",
    )[0][0]
    with store.connect(read_only=True) as conn:
        baselines = conn.execute("SELECT DISTINCT baseline FROM iia_cells(NULL, ['C_1'])")
        assert baselines.fetchall() == [(pytest.approx(float(baseline)),)]
    # the full-rank cell equals the whole-vector swap: its stored answers are the cf's labels...
    before = store_snapshot(root)
    again = run_experiment(root, SPEC)
    assert again.run_id == outcome.run_id and again.result.batches_run == 0
    assert _rows(store, "SELECT count(*) FROM subspaces") == [(8,)]
    assert store_snapshot(root) == before


def test_methods_by_cell_pairs_whole_vector_and_das_each_with_its_own_baseline(tmp_path):
    from addpatch.queries import get_query, run_query

    root = tmp_path / "store"
    common = dict(size=40, layers="0,1", positions="last", targets=["C_1"])
    run_experiment(root, RunSpec(**common, interventions_only=True))  # type: ignore[arg-type]
    das = RunSpec(
        **common,  # type: ignore[arg-type]
        method="das",
        das=DasOptions(ks=(1, 2), epochs=1, batch_size=16, control=True),
        interventions_only=True,
    )
    store = run_experiment(root, das).store
    with store.connect(read_only=True) as conn:
        got = run_query(conn, get_query("methods_by_cell"), {"targets": ["C_1"]})
        cells = conn.execute(
            "SELECT method, layer, k, control, iia, baseline FROM iia_cells(NULL, ['C_1'])"
        ).fetchall()
    assert sorted(got["layer"].to_list()) == [0, 1]
    for row in got.iter_rows(named=True):
        whole = [c for c in cells if c[0] == "patch" and c[1] == row["layer"]]
        trained = [c for c in cells if c[0] == "das" and c[1] == row["layer"] and c[3] is None]
        controls = [c for c in cells if c[0] == "das" and c[1] == row["layer"] and c[3]]
        assert row["patch_iia"] == pytest.approx(whole[0][4])
        assert row["das_iia"] == pytest.approx(max(c[4] for c in trained))
        best_k = [c[2] for c in trained if c[4] == pytest.approx(row["das_iia"])]
        assert row["das_k"] in best_k
        assert row["control_iia"] == pytest.approx(
            max(c[4] for c in controls if c[2] == row["das_k"])
        )
        # each method against its own examples' baseline: all kept pairs, the held-out ones
        assert row["patch_baseline"] == pytest.approx(whole[0][5])
        assert row["das_baseline"] == pytest.approx(trained[0][5])
    assert (got["patch_baseline"] != got["das_baseline"]).all()  # these 8 held-out pairs differ
    # the drill-down of a DAS cell shows the best subspace trained for the target, not a mix
    with store.connect(read_only=True) as conn:
        hits = conn.execute(
            "SELECT layer, subspace_id, k, hits, n FROM iia_cells(NULL, ['C_1']) "
            "WHERE method = 'das' AND trained_for = 'C_1' AND control IS NULL"
        ).fetchall()
        das_run = conn.execute("SELECT max(id) FROM runs").fetchone()[0]
        shown = run_query(
            conn,
            get_query("cell_examples"),
            {"run_id": das_run, "target": "C_1", "per_cell": 100},
        )
    for layer in (0, 1):
        cell = shown.filter(pl.col("layer") == layer)
        best = max((h for h in hits if h[0] == layer), key=lambda h: (h[3], -h[2]))
        assert cell["subspace_id"].unique().to_list() == [best[1]]
        assert cell.height == cell["cell_n"][0] == best[4]  # each held-out example once
        assert cell["cell_right"][0] == best[3] == cell["correct"].sum()
    # and so does its label log-prob: n counts that subspace's held-out examples once
    from addpatch.probabilities import label_logprobs

    logprob = label_logprobs(store, run_id=das_run, targets=["C_1"])
    assert sorted(logprob["layer"].to_list()) == [0, 1]
    assert logprob["n"].to_list() == [8, 8]


def test_a_lost_cell_is_trained_again_with_the_same_result(tmp_path):
    root = tmp_path / "store"
    spec = RunSpec(
        size=40,
        layers="1",
        positions="last",
        targets=["C_1"],
        method="das",
        das=DasOptions(ks=(2,), epochs=1, batch_size=16),
        interventions_only=True,
    )
    outcome = run_experiment(root, spec)
    store = outcome.store
    [(path,)] = _rows(store, "SELECT path FROM subspaces")
    basis = load_file(root / path)["basis"]
    answers = _rows(store, "SELECT example_id, text FROM patched_outputs ORDER BY 1")
    [(output,)] = _rows(store, "SELECT path FROM output_files")
    (root / output).unlink()  # as if the worker was killed after training, before registering
    resumed = run_experiment(root, spec)
    assert resumed.result.batches_run == 1
    # the same basis (the file's bytes may differ: safetensors orders its metadata freely)
    assert _rows(store, "SELECT path FROM subspaces") == [(path,)]
    assert torch.equal(load_file(root / path)["basis"], basis)
    assert _rows(store, "SELECT example_id, text FROM patched_outputs ORDER BY 1") == answers


@pytest.fixture(scope="module")
def store_with_spec_dataset(tmp_path_factory):
    """A store holding SPEC's dataset and a full-vector run on it (copied by each test)."""
    root = tmp_path_factory.mktemp("das") / "store"
    run_experiment(root, RunSpec(size=48, layers="1", positions="last", interventions_only=True))
    return root


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"targets": None}, "--targets"),
        ({"das": DasOptions(ks=(0,))}, "at least 1"),
        ({"das": DasOptions(ks=(65,))}, "larger than the residual stream's width 64"),
        ({"targets": ["C_9"]}, "C_9"),
        ({"size": 6}, "to train"),
        ({"positions": "a1.d1+a9.d0"}, "a9.d0"),
        ({"components": ("resid", "attn")}, "residual stream"),
    ],
)
def test_bad_das_input_is_one_error_and_leaves_the_store(
    tmp_path, store_with_spec_dataset, changes, message
):
    import shutil
    from dataclasses import replace

    root = tmp_path / "store"
    shutil.copytree(store_with_spec_dataset, root)
    before = store_snapshot(root)
    with pytest.raises(BadInput, match=message) as error:
        run_experiment(root, replace(SPEC, **changes))
    assert "\n" not in str(error.value)
    if changes != {"size": 6}:  # another dataset: generated and stored before the split
        assert store_snapshot(root) == before
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM subspaces").fetchone() == (0,)


def _planted_model(seed: int = 0):
    """A one-layer Llama whose attention and MLP write nothing, so the last token's answer is
    read from its own embedding, along one direction u only (logits ±κ u·h): a variable
    planted in a known direction. Every value token's embedding also differs from the others
    in random directions, so a whole-vector swap moves far more than u."""
    from transformers import LlamaConfig, LlamaForCausalLM

    generator = torch.Generator().manual_seed(seed)
    config = LlamaConfig(
        vocab_size=12,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=8,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    u = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        embeddings = torch.randn(12, 16, generator=generator)
        embeddings -= (embeddings @ u)[:, None] * u  # values differ off u at random
        signs = torch.tensor([1.0 if t % 2 else -1.0 for t in range(12)])
        embeddings += 2.0 * signs[:, None] * u  # odd tokens +2u, even tokens -2u
        model.model.embed_tokens.weight.copy_(embeddings)
        head = torch.zeros(12, 16)
        head[10], head[11] = 8.0 * u, -8.0 * u  # answer 10 when u·h > 0, else 11
        model.lm_head.weight.copy_(head)
    return model, u


def _planted_pairs(count: int, seed: int):
    from addpatch.das.examples import DasExample
    from addpatch.engine.positions import PromptLayout

    rng = torch.Generator().manual_seed(seed)
    values = torch.randint(3, 10, (count, 2), generator=rng).tolist()

    def layout(token: int) -> PromptLayout:
        return PromptLayout(
            (1, token), ("<bos>", str(token)), ("bos", "x"), {"bos": 0, "x": 1, "last": 1}
        )

    examples = []
    for i, (base, cf) in enumerate(values):
        label = 10 if cf % 2 else 11  # the variable (the sign along u) from the counterfactual
        examples.append(DasExample(PromptPair(i, layout(base), layout(cf)), label, (label,)))
    return examples


def test_a_planted_direction_is_recovered():
    from addpatch.das.training import _answer_logits_fast, _exact, _freeze, _lay_out
    from addpatch.engine.architecture import find_decoder

    model, u = _planted_model()
    train, test = _planted_pairs(256, seed=1), _planted_pairs(128, seed=2)
    settings = TrainSettings(k=1, learning_rate=5e-2, epochs=4, batch_size=32, seed=0)
    trained = train_subspace(model, 0, train, -1, "last", settings)
    stack = find_decoder(model)
    with torch.no_grad():
        frozen = _freeze(stack, _lay_out(test, "last", 0, torch.device("cpu")), -1)
        logits = _answer_logits_fast(stack, frozen, -1, trained.basis)
        held_out = float(_exact(logits, frozen.sequences.targets).float().mean())
        random_basis = TrainableSubspace(16, 1, seed=9).basis()
        chance = float(
            _exact(_answer_logits_fast(stack, frozen, -1, random_basis), frozen.sequences.targets)
            .float()
            .mean()
        )
    assert held_out >= 0.95 > chance  # test IIA of the trained direction, above a random one
    assert abs(float(trained.basis[0] @ u)) > 0.95  # aligned with the planted direction


DAS_ARGS = [
    "run",
    "--size", "80",
    "--layers", "1",
    "--positions", "last,a1.d1+last",
    "--method", "das",
    "--targets", "C_1",
    "--k", "1,2",
    "--epochs", "6",
    "--interventions-only",
    "--threads", "1",
]  # fmt: skip


def _das_rows(store) -> tuple[list[tuple], dict[int, torch.Tensor]]:
    conn = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(store)])
    try:
        rows = conn.execute(
            "SELECT subspace_id, k, trained_for, example_id, layer, position, token_ids, text, answer "
            "FROM patched_outputs ORDER BY subspace_id, example_id"
        ).fetchall()
        paths = conn.execute("SELECT subspace_id, path FROM subspaces").fetchall()
    finally:
        conn.close()
    return rows, {i: load_file(store / path)["basis"] for i, path in paths}


def test_killed_das_training_resumes_to_the_uninterrupted_result(tmp_path):
    import os
    import random
    import signal
    import time

    from typer.testing import CliRunner

    from cli.main import app
    from tests.test_interrupted_runs import ForkServer, _alive, _batch_files

    reference = tmp_path / "reference"
    done = CliRunner().invoke(app, [*DAS_ARGS, "--store", str(reference)])
    assert done.exit_code == 0, done.output
    expected_rows, expected_bases = _das_rows(reference)
    assert len(expected_bases) == 4 and expected_rows

    store = tmp_path / "killed"
    rng = random.Random(3)
    kills = 0
    server = ForkServer()
    try:
        for _ in range(2):  # each time: once one more cell is stored, while the next one trains
            pid = server.start([*DAS_ARGS, "--store", str(store)])
            before = _batch_files(store) if (store / "outputs").exists() else 0
            deadline = time.monotonic() + 300
            while _alive(pid) and _batch_files(store) <= before:
                assert time.monotonic() < deadline, "the run stored no cell in 300 s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.02))  # the next cell has just started training
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
                kills += 1
            server.wait()
    finally:
        server.close()
    assert kills == 2
    final = CliRunner().invoke(app, [*DAS_ARGS, "--store", str(store)])
    assert final.exit_code == 0, final.output
    assert "of 4 subspaces to train" in final.output and "4 of 4" not in final.output
    rows, bases = _das_rows(store)
    assert rows == expected_rows
    assert bases.keys() == expected_bases.keys()
    assert all(torch.equal(bases[i], expected_bases[i]) for i in bases)
