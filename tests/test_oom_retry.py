"""Out of GPU memory in a batch: the batch is halved and retried, and the run's provenance says so.
Simulated on CPU by an engine that raises torch.OutOfMemoryError above a batch size."""

from __future__ import annotations

import json

import pytest
import torch

from addpatch.engine.patching import PatchEngine
from addpatch.experiment.interventions import patch_batch_to_file, register_output
from addpatch.store.store import Store
from tests.conftest import tiny_model
from tests.test_engine import _mixed_numbers, _pairs
from tests.test_store_components import store_at_0002


class SmallMemoryEngine(PatchEngine):
    """An engine whose device "runs out of memory" on batches of more than `fits` examples."""

    fits = 2
    calls: list[int]

    def sweep(self, pairs, *args, **kwargs):
        self.calls.append(len(pairs))
        if len(pairs) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().sweep(pairs, *args, **kwargs)


def _rows(table) -> list[tuple]:
    return sorted(
        (r["example_id"], r["component"], r["layer"], r["head"] if r["head"] is not None else -1,
         r["position"], tuple(r["token_ids"]))
        for r in table.to_pylist()
    )  # fmt: skip


def test_out_of_memory_halves_the_batch_and_gives_the_same_rows(tmp_path):
    model, tokenizer = tiny_model("llama", "digits", seed=4)
    pairs = _pairs(tokenizer, _mixed_numbers(8, 5))
    args = dict(layers=[-1, 0, 1], positions=["a0.d0", "last"], max_new_tokens=3,
                components=("resid", "heads"))  # fmt: skip
    small = SmallMemoryEngine(model, tokenizer)
    small.calls = []
    halved = patch_batch_to_file(
        tmp_path / "a", small, model_id=1, run_id=1, batch_index=0, batch=pairs, **args
    )
    whole = patch_batch_to_file(
        tmp_path / "b", PatchEngine(model, tokenizer), model_id=1, run_id=1, batch_index=0,
        batch=pairs, **args,
    )  # fmt: skip
    assert small.calls == [5, 2, 3, 1, 2]  # 5 -> 2 + 3, 3 -> 1 + 2
    assert (halved.halvings, halved.smallest) == (2, 1)
    assert (whole.halvings, whole.rows) == (0, halved.rows)
    import pyarrow.parquet as pq

    assert _rows(pq.read_table(tmp_path / "a" / halved.relpath)) == _rows(
        pq.read_table(tmp_path / "b" / whole.relpath)
    )


def test_other_errors_are_not_retried(tmp_path):
    model, tokenizer = tiny_model("llama", "digits", seed=4)
    pairs = _pairs(tokenizer, _mixed_numbers(8, 3))

    class Broken(PatchEngine):
        def sweep(self, *args, **kwargs):
            raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        patch_batch_to_file(
            tmp_path, Broken(model, tokenizer), model_id=1, run_id=1, batch_index=0,
            batch=pairs, layers=[0], positions=["last"], max_new_tokens=2,
        )  # fmt: skip


def test_halved_batch_is_recorded_in_the_run_provenance(tmp_path):
    root = store_at_0002(tmp_path)
    store = Store(root)
    store.upgrade()
    model, tokenizer = tiny_model("llama", "digits", seed=4)
    small = SmallMemoryEngine(model, tokenizer)
    small.calls = []
    output = patch_batch_to_file(
        root, small, model_id=1, run_id=1, batch_index=7,
        batch=_pairs(tokenizer, _mixed_numbers(8, 3)), layers=[0], positions=["last"],
        max_new_tokens=2,
    )  # fmt: skip
    register_output(store, 1, output)
    with store.connect(read_only=True) as conn:
        provenance = json.loads(
            conn.execute("SELECT provenance_json FROM runs WHERE id = 1").fetchone()[0]
        )
    assert provenance["oom_retries"] == [{"batch": 7, "halvings": 1, "smallest_batch": 1}]
