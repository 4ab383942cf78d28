"""The notebooks in notebooks/ run top to bottom, and are stored without outputs.

Each notebook is executed with nbclient in a fresh Jupyter kernel (the interpreter running the
tests, through ipykernel), in a scratch folder; a cell that raises fails the test with that cell's
traceback. The notebooks check their own claims with `assert` cells, and these tests check what
they show. One class per notebook, so that pytest-xdist (`--dist loadscope`) runs them on
different workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TASK = "01_addition_task_and_causal_models.ipynb"
POSITIONS = "02_token_positions_for_digits.ipynb"
CARRIES = "03_counterfactuals_and_carry_variables.ipynb"
CELL_TIMEOUT_S = 180


def execute(
    name: str, tmp_path: Path, passes: tuple[dict[str, str], ...] = ({},)
) -> list[nbformat.NotebookNode]:
    """Run notebook `name` top to bottom in one new kernel started in `tmp_path/work`, once per
    pass: each pass sets its environment variables and starts from an empty namespace
    (`%reset -f`; the modules imported stay imported, so a second pass does not pay for PyTorch
    again). Returns each pass's notebook with its outputs."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    notebooks = [nbformat.read(NOTEBOOKS / name, as_version=4) for _ in passes]
    client = NotebookClient(
        notebooks[0],
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        extra_arguments=["--InteractiveShell.colors=nocolor"],  # plain tracebacks in failures
    )
    with client.setup_kernel():
        for notebook, env in zip(notebooks, passes, strict=True):
            start = f"%reset -f\nimport os\nos.environ.update({env!r})"
            notebook.cells.insert(0, nbformat.v4.new_code_cell(start))
            client.nb = notebook  # execute_cell puts each executed cell back into client.nb
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
    return notebooks


def shown(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed, as text (HTML included)."""
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.extend(str(v) for v in output.data.values())
    return "\n".join(parts)


def chart_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    return [
        output.data["text/html"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type in ("execute_result", "display_data")
        and "vegaEmbed(" in output.data.get("text/html", "")
    ]


def test_the_three_notebooks_are_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [TASK, POSITIONS, CARRIES]


@pytest.mark.parametrize("name", [TASK, POSITIONS, CARRIES])
def test_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{name} is stored with outputs; clear them (JupyterLab: Edit > Clear Outputs of All "
            "Cells, then save; or `jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`)"
        )
    assert "widgets" not in notebook.metadata
    assert notebook.metadata.kernelspec.name == "python3"


def test_the_carries_notebook_ends_with_trained_subspaces():
    notebook = nbformat.read(NOTEBOOKS / CARRIES, as_version=4)
    headings = [c.source.splitlines()[2] for c in notebook.cells if c.source.startswith("---")]
    assert headings[-1].startswith("## Trained subspaces (DAS)")
    assert 'method="das"' in notebook.cells[-3].source


class TestTaskNotebook:
    def test_runs_and_shows_labels_and_generators(self, tmp_path):
        [notebook] = execute(TASK, tmp_path)
        text = shown(notebook)
        # the seed's worked pair 70 + 58 <- 74 + 85: digit_0_1 -> 132, joint -> 125
        assert "'digit_0_1': (' 132', 132)" in text
        assert "'digit_0_0+digit_1_1': (' 125', 125)" in text
        assert "O_2&lt;-C_1" in text  # a cross assignment in the labels table (HTML)
        for kind in ("random", "sum_to_nine", "one_digit", "carry_flip"):
            assert kind in text
        assert " 1009" in text  # the 3-digit cascade
        assert list((tmp_path / "work").iterdir()) == []  # needs no store, writes nothing


class TestPositionsNotebook:
    def test_runs_with_the_real_tokenizers_and_skips_those_absent(self, tmp_path):
        absent = tmp_path / "no-parts"
        # `make test` fetches the real tokenizers before the suite (tests/real_parts.py); the
        # second pass points the notebook at a folder without them
        present, skipped = execute(POSITIONS, tmp_path, ({}, {"ADDPATCH_TEST_PARTS": str(absent)}))
        text = shown(present)
        assert "['tiny-adder-digits', 'tiny-adder-chunks', 'Llama-3.1', 'Gemma-3', 'Qwen3']" in text
        assert "skipped" not in text
        assert "123|4" in text  # chunks of three on Llama-3.1 and the chunked tiny tokenizer
        assert "1|2|3|4" in text  # a token per digit on Gemma-3, Qwen3 and tiny-adder-digits
        assert "digit_0_0+digit_0_1+digit_0_2" in text  # the joint target a chunk gets
        assert "chat template (before)" in text and "answer prefix" in text
        assert "--chat needs a tokenizer with a chat template" in text

        text = shown(skipped)
        for name in ("Llama-3.1", "Gemma-3", "Qwen3"):
            assert f"skipped {name}: no tokenizer.json in {absent}" in text
        assert "['tiny-adder-digits', 'tiny-adder-chunks']" in text
        assert "skipped: no real tokenizer with a chat template is in the cache" in text
        assert "123|4" in text and "1|2|3|4" in text  # the shipped tokenizers still shown


class TestCarriesNotebook:
    def test_runs_scores_and_draws_from_a_scratch_store(self, tmp_path, isolated_store):
        [notebook] = execute(CARRIES, tmp_path)
        text = shown(notebook)
        assert "run 1 complete" in text and "run 2 complete" in text
        assert "share_differ" in text  # the distinguishability query
        assert "O_1 at layer 0, position 11 (' is')" in text  # the drill-down's cell
        assert "run 3 complete" in text and "subspaces to train" in text  # the DAS run
        assert "shuffled" in text and "subspaces/model=1/run=3/subspace-00000" in text
        charts = chart_outputs(notebook)
        assert len(charts) == 4
        for chart in charts:
            call = chart.split('vegaEmbed("#', 1)[1]
            spec = json.loads(call.split(", ", 1)[1].rsplit(', {"actions": false})', 1)[0])
            assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
            assert spec["title"]["text"] in ("digit_0_1", "O_1", "C_1")
            assert "cdn.jsdelivr" not in chart  # drawn with the inlined bundle, offline
        # a scratch store: nothing in the working folder or the default store
        assert list((tmp_path / "work").iterdir()) == []
        assert not isolated_store.exists()
