"""Check a run's arguments against the model's config and tokenizer before anything is written."""

from __future__ import annotations

from transformers import AutoConfig, AutoTokenizer

from addpatch.engine.positions import layout_prompt, render_with_spans, select_positions
from addpatch.experiment.interventions import parse_layers
from addpatch.models.loading import pick_device, pick_dtype, resolve_model
from addpatch.task.addition import AdditionTask


def preflight(
    *,
    model: str,
    task: AdditionTask,
    layers: str,
    positions: str,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
) -> None:
    """BadInput/ModelNotFound for anything wrong that can be known without loading weights."""
    resolved = resolve_model(model)
    pick_dtype(dtype, pick_device(device))
    config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    parse_layers(layers, int(num_layers))
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    sample = task.make_input([10 ** (task.num_digits - 1)] * task.num_addends)
    text, spans = render_with_spans(
        sample.template, list(sample.numbers), sample.prefix, sample.suffix
    )
    layout = layout_prompt(tokenizer, text, spans)
    select_positions(layout, positions, task.num_addends, task.num_digits)
