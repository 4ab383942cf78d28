"""How much probability a patched model gives the label: the label-log-prob metric.

For each output the engine stores the top-5 log-probabilities at the first answer step whose
greedy token carries a digit (`digit_step`; step 1 for tokenizers that answer with a space
token first). A cell's `label_logprob` is the mean, over its examples, of the log-probability
of the label's first digit token at that step:

* the label's first digit token is the first token holding a digit when the model's tokenizer
  encodes the label as an answer (`" 109"` -> `1` with one-digit tokens, `109` with 3-digit
  chunks);
* rule outside the top-5: an example whose label token is not among the stored five (or whose
  answer has no digit at all) is *missing*: it is left out of the mean, and `coverage` is the
  share of the cell's examples that count. Read the mean with its coverage: a low coverage
  means the label mostly gets less than the fifth-best token's probability;
* outputs stored before addpatch kept these columns cannot be scored: `label_logprobs` raises
  `MetricUnavailable` naming the run.

The tokenizer is loaded (not the model) from where the run's model was loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from addpatch.errors import BadInput
from addpatch.scoring import _label_runs
from addpatch.store import logprobs
from addpatch.store.runs import run_model
from addpatch.store.store import Store
from addpatch.task.templates import DIGITS, answer_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class MetricUnavailable(BadInput):
    """The stored outputs lack what a metric needs (e.g. written by an older addpatch)."""


def label_first_tokens(tokenizer: PreTrainedTokenizerBase, labels: list[int]) -> pl.DataFrame:
    """label -> token_id of the first token holding a digit in the label's answer text."""
    rows = []
    for label in labels:
        ids = tokenizer(answer_text(label), add_special_tokens=False)["input_ids"]
        first = next((i for i in ids if any(ch in DIGITS for ch in tokenizer.decode([i]))), None)
        if first is not None:
            rows.append((label, first))
    return pl.DataFrame(rows, schema={"label": pl.Int64, "token_id": pl.Int32}, orient="row")


def _tokenizer_of_run(store: Store, run_id: int) -> PreTrainedTokenizerBase:
    from addpatch.errors import AddpatchError
    from addpatch.models.loading import ResolvedModel, load_tokenizer, resolve_model

    with store.connect(read_only=True) as conn:
        name, source = run_model(conn, run_id)
    path = Path(source)
    try:
        resolved = ResolvedModel(name, path, None) if path.is_dir() else resolve_model(name)
        return load_tokenizer(resolved)
    except (AddpatchError, OSError, ValueError) as error:
        raise MetricUnavailable(
            f"the label log-prob of run {run_id} needs the tokenizer of {name} "
            f"(looked in {source}): {str(error).splitlines()[0]}"
        ) from None


def label_logprobs(
    store: Store, *, run_id: int, targets: list[str], informative: bool = False
) -> pl.DataFrame:
    """Per (run, target, layer, position): label_logprob (mean log-prob of the label's first
    digit token at the digit step, over the examples where it is in the stored top-5),
    coverage (the share of examples where it is) and n.

    Raises:
        MetricUnavailable: the run's outputs were stored without the digit step's log-probs
            (an older addpatch), or the model's tokenizer cannot be found.
    """
    canonical = _label_runs(store, run_id, targets) or targets
    with store.connect(read_only=True) as conn:
        stored, rows = logprobs.digit_step_coverage(conn, run_id)
        labels = logprobs.run_labels(conn, run_id, canonical)
    if rows and not stored:
        raise MetricUnavailable(
            f"run {run_id} was stored without the log-probs of the first digit step (by an "
            "addpatch older than this metric): its label log-prob cannot be computed; "
            "patch it again in a new store to get them"
        )
    tokens = label_first_tokens(_tokenizer_of_run(store, run_id), labels)
    with store.connect(read_only=True) as conn:
        return logprobs.label_logprob_cells(
            conn, run_id=run_id, targets=canonical, informative=informative, tokens=tokens
        )
