"""Check a run's arguments against the model's config and tokenizer before anything is written."""

from __future__ import annotations

from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from addpatch.engine.positions import PromptLayout, layout_input, select_positions
from addpatch.experiment.interventions import parse_layers
from addpatch.models.loading import pick_device, pick_dtype, resolve_model
from addpatch.task.addition import AdditionTask


def sample_layouts(tokenizer: PreTrainedTokenizerBase, task: AdditionTask) -> list[PromptLayout]:
    """Lay out sample prompts of the task in every template, at width 1 and D, with the task's
    worked examples and chat template: BadInput when a digit gets no token of its own."""
    layouts = []
    for template in task.templates:  # type: ignore[union-attr]
        for width in sorted({1, task.num_digits}):
            low, high = 10 ** (width - 1), 10**width - 1
            shots = [[high] * task.num_addends] * task.num_shots
            for number in (low, high):
                sample = task.make_input(
                    [number] * task.num_addends, num_digits=width, template=template, shots=shots
                )
                layouts.append(layout_input(tokenizer, sample))
    return layouts


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
    layouts = sample_layouts(tokenizer, task)
    select_positions(layouts[-1], positions, task.num_addends, task.num_digits)
