"""`addpatch dataset`: generate counterfactual pairs into the store (and filter them)."""

from __future__ import annotations

from typing import Annotated

import typer

from addpatch.settings import DEFAULT_MODEL
from cli.options import (
    STORE_DEFAULT,
    AddendsOption,
    AnswerPrefixOption,
    ChatOption,
    DigitsOption,
    KindOption,
    PrefixOption,
    SeedOption,
    ShotsOption,
    SizeOption,
    StoreOption,
    SuffixOption,
    TemplateOption,
    prompt_task,
)
from cli.output import console, errors


def _options(pairs: list[str]) -> dict[str, object]:
    from addpatch.errors import BadInput

    options: dict[str, object] = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"cannot read option {item!r}; write --option name=value")
        options[name.strip()] = (
            int(value) if value.strip().lstrip("-").isdecimal() else value.strip()
        )
    return options


def dataset(
    kind: KindOption = "random",
    digits: DigitsOption = 2,
    addends: AddendsOption = 2,
    size: SizeOption = 256,
    seed: SeedOption = 0,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Generator option name=value (e.g. column=1, carry=1, addend=0, digit=1, drop_uninformative_for=C_1).",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model whose answers filter the pairs.")
    ] = DEFAULT_MODEL,
    filter_pairs: Annotated[
        bool,
        typer.Option("--filter/--no-filter", help="Answer every prompt and report the keep rate."),
    ] = True,
    show: Annotated[int, typer.Option(help="Examples to print.")] = 3,
    template: TemplateOption = None,
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    shots: ShotsOption = 0,
    chat: ChatOption = False,
    answer_prefix: AnswerPrefixOption = "",
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Generate counterfactual pairs with a seeded generator and store them.

    Generators: random, sum_to_nine, one_digit, carry_flip (see --option). Then the model
    (--model, default the shipped tiny adder) answers every prompt, and the keep rate (pairs
    answered right on both prompts) is printed; --no-filter skips that.

    \b
    Example:
        addpatch dataset --kind one_digit --digits 3 --size 512 -o addend=1 -o digit=2
        addpatch dataset --kind carry_flip -o carry=1 --model tiny-adder-digits
        addpatch dataset --kind sum_to_nine -o column=1 --no-filter
        addpatch dataset --digits 1 --shots 2 --template '{num0}+{num1}=' --template '{num0} plus {num1} is'
        addpatch dataset --digits 1 --chat --answer-prefix 'The answer is' --model ~/models/SmolLM2-135M-Instruct
    """
    from addpatch.limits import check_range
    from addpatch.task.generators import GENERATORS, generate_pairs

    check_range("--show", show, 0, 1_000)
    task = prompt_task(
        addends=addends,
        digits=digits,
        template=template,
        prefix=prefix,
        suffix=suffix,
        shots=shots,
        chat=chat,
        answer_prefix=answer_prefix,
    )
    options = _options(option or [])
    pairs = generate_pairs(kind, task, size, seed, **options)  # bad input fails before the store
    from addpatch.experiment.datasets import create_dataset, load_pairs
    from addpatch.store.store import Store

    prepared = None
    if filter_pairs:  # a model that cannot be used fails before the store is touched
        # PyTorch and transformers are imported only here: --no-filter needs no model
        from addpatch.experiment.filtering import filter_dataset, low_keep_rate_hint
        from addpatch.experiment.preflight import (
            check_weight_files,
            checked_config,
            sample_layouts,
        )
        from addpatch.experiment.session import prepare_model, register_model
        from addpatch.models.loading import load_tokenizer, model_for_width, resolve_model

        model = model_for_width(model, digits)
        resolved = resolve_model(model)
        checked_config(resolved, trust_remote_code=False)
        check_weight_files(resolved)
        sample_layouts(load_tokenizer(resolved, False), task)
        prepared = prepare_model(model)

    opened = Store.open(store, create=True)
    with opened.writer():
        info = create_dataset(
            opened, kind=kind, task=task, size=size, seed=seed, options=options, pairs=pairs
        )
        state = "generated" if info.created else "already in the store"
        console.print(f"Dataset {info.name} (id {info.id}): {size} pairs, {state}")
        console.print(f"  generator {kind}: {GENERATORS[kind].description}")
        _, _, pairs = load_pairs(opened, info.id)
        for pair in pairs[:show]:
            console.print(
                f"  {pair.base.prompt!r} -> {pair.base.answer!r}   cf {pair.counterfactual.prompt!r} -> {pair.counterfactual.answer!r}"
            )
        if prepared is not None:
            loaded = register_model(opened, prepared)
            summary = filter_dataset(
                opened, loaded.engine, model_id=loaded.model_id, dataset_id=info.id, batch_size=256
            )
            console.print(
                f"Filter with {model}: kept {summary.kept}/{summary.total} (keep rate {summary.keep_rate:.1%})"
            )
            if summary.low:
                errors.print(f"Warning: keep rate {summary.keep_rate:.1%} is under 50%")
                errors.print(
                    low_keep_rate_hint(
                        opened,
                        model_id=loaded.model_id,
                        dataset_id=info.id,
                        tokenizer=loaded.engine.tokenizer,
                    ),
                    markup=False,
                    highlight=False,
                )
