"""The catalog schema. The only source of truth for the tables: migrations are checked against it.

Ids are assigned by addpatch (one writer at a time), so the tables need no sequences.
Lists (addends, layers) are stored as JSON text to stay portable across DuckDB versions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Model(Base):
    """A language model, identified by the hash of its weights."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String, nullable=False)
    source: Mapped[str] = mapped_column(String, nullable=False)  # path it was loaded from
    revision: Mapped[str | None] = mapped_column(String)  # HF commit, when known
    weights_sha256: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    tokenizer_sha256: Mapped[str] = mapped_column(String, nullable=False)
    architecture: Mapped[str] = mapped_column(String, nullable=False)
    num_layers: Mapped[int] = mapped_column(Integer, nullable=False)
    hidden_size: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Dataset(Base):
    """Counterfactual pairs from one generator call; model-independent."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String, nullable=False)
    num_addends: Mapped[int] = mapped_column(Integer, nullable=False)
    num_digits: Mapped[int] = mapped_column(Integer, nullable=False)
    template: Mapped[str] = mapped_column(String, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    options_json: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    # prompt settings (NULL in rows written before revision 0003: the plain prompt of `template`)
    templates_json: Mapped[str | None] = mapped_column(Text)  # JSON list of templates
    prompt_prefix: Mapped[str | None] = mapped_column(String)
    prompt_suffix: Mapped[str | None] = mapped_column(String)
    num_shots: Mapped[int | None] = mapped_column(Integer)
    chat: Mapped[bool | None] = mapped_column(Boolean)
    # the start of the reply (--answer-prefix); NULL: none (and in rows written before 0007)
    answer_prefix: Mapped[str | None] = mapped_column(String)
    # under --chat, worked examples as turns of their own (0008); NULL/false: inside the user turn
    shot_turns: Mapped[bool | None] = mapped_column(Boolean)


class Example(Base):
    """One (base, counterfactual) pair of a dataset."""

    __tablename__ = "examples"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    example_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_addends: Mapped[str] = mapped_column(String, nullable=False)  # JSON list of ints
    base_prompt: Mapped[str] = mapped_column(String, nullable=False)
    base_sum: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cf_addends: Mapped[str] = mapped_column(String, nullable=False)
    cf_prompt: Mapped[str] = mapped_column(String, nullable=False)
    cf_sum: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # NULL in rows written before revision 0003: the dataset's template, no worked examples
    base_template: Mapped[str | None] = mapped_column(String)
    cf_template: Mapped[str | None] = mapped_column(String)
    shots_json: Mapped[str | None] = mapped_column(Text)  # JSON list of worked examples' addends


class FilterResult(Base):
    """Whether a model answers an example's base and counterfactual prompts correctly."""

    __tablename__ = "filter_results"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    example_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_text: Mapped[str] = mapped_column(String, nullable=False)
    cf_text: Mapped[str] = mapped_column(String, nullable=False)
    base_correct: Mapped[bool] = mapped_column(Boolean, nullable=False)
    cf_correct: Mapped[bool] = mapped_column(Boolean, nullable=False)


class Label(Base):
    """The counterfactual label of one example for one target variable (set)."""

    __tablename__ = "labels"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String, primary_key=True)
    example_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    causal_model: Mapped[str] = mapped_column(String, nullable=False)
    label_text: Mapped[str] = mapped_column(String, nullable=False)
    label: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Run(Base):
    """One intervention sweep: a model on a dataset's kept examples over layers x positions."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("config_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False)
    config_sha256: Mapped[str] = mapped_column(String, nullable=False)  # what makes outputs equal
    layers_json: Mapped[str] = mapped_column(String, nullable=False)
    position_set: Mapped[str] = mapped_column(String, nullable=False)
    max_new_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    dtype: Mapped[str] = mapped_column(String, nullable=False)
    device: Mapped[str] = mapped_column(String, nullable=False)
    batch_size: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    num_examples: Mapped[int] = mapped_column(Integer, nullable=False)
    num_batches: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)  # running | complete
    provenance_json: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    wall_time_s: Mapped[float | None] = mapped_column(Double)
    interventions_per_s: Mapped[float | None] = mapped_column(Double)
    # how the run intervenes (0009): das for trained subspaces; NULL: full-vector patching
    method: Mapped[str | None] = mapped_column(String)


class RunPosition(Base):
    """The named token positions of a run, in prompt order, with the token text they show."""

    __tablename__ = "run_positions"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False)
    token_text: Mapped[str] = mapped_column(String, nullable=False)


class RunDigitToken(Base):
    """The digits of an addend that one token holds in every prompt of a run (e.g. `579` as one
    token: digits 0, 1 and 2 of its addend), one row per digit; a run's default targets include
    each group's joint digits. Also in the run's provenance_json, as a record; read from here."""

    __tablename__ = "run_digit_tokens"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    group_index: Mapped[int] = mapped_column(Integer, primary_key=True)  # order recorded
    digit: Mapped[int] = mapped_column(Integer, primary_key=True)
    addend: Mapped[int] = mapped_column(Integer, nullable=False)


class OutputFile(Base):
    """A Parquet file of patched outputs; only registered files are visible to queries."""

    __tablename__ = "output_files"
    __table_args__ = (UniqueConstraint("run_id", "batch_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), nullable=False)
    batch_index: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String, nullable=False, unique=True)  # relative to store
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Subspace(Base):
    """A trained DAS subspace: one cell (layer x position x component) of a DAS run, trained
    for one target (or a control of it) at rank k; its basis is a safetensors file."""

    __tablename__ = "subspaces"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    subspace_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the run's cell index
    target: Mapped[str] = mapped_column(String, nullable=False)
    control: Mapped[str | None] = mapped_column(String)  # shuffled: trained on others' labels
    k: Mapped[int] = mapped_column(Integer, nullable=False)
    layer: Mapped[int] = mapped_column(Integer, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # run_positions.position
    component: Mapped[str] = mapped_column(String, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    split_sha256: Mapped[str] = mapped_column(String, nullable=False)
    settings_json: Mapped[str] = mapped_column(Text, nullable=False)  # optimizer and schedule
    final_train_loss: Mapped[float] = mapped_column(Double, nullable=False)
    train_iia: Mapped[float] = mapped_column(Double, nullable=False)
    test_iia: Mapped[float] = mapped_column(Double, nullable=False)
    train_examples: Mapped[int] = mapped_column(Integer, nullable=False)
    test_examples: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String, nullable=False, unique=True)  # relative to store
    sha256: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class DatasetSplit(Base):
    """Which part (train or test) of a named, seeded split each example of a dataset is in."""

    __tablename__ = "dataset_splits"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    split: Mapped[str] = mapped_column(String, primary_key=True)  # e.g. seed0-test20
    example_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    part: Mapped[str] = mapped_column(String, nullable=False)  # train | test


class AttributionFile(Base):
    """A Parquet file of attribution estimates (one batch of an attribution run)."""

    __tablename__ = "attribution_files"
    __table_args__ = (UniqueConstraint("run_id", "batch_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), nullable=False)
    batch_index: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String, nullable=False, unique=True)  # relative to store
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class ScreenedCell(Base):
    """A cell that a run patched exactly because an attribution run ranked it among the best
    for a target (--screen N); head is -1 for components other than heads."""

    __tablename__ = "screened_cells"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String, primary_key=True)
    component: Mapped[str] = mapped_column(String, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    head: Mapped[int] = mapped_column(Integer, primary_key=True)
    attribution_run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)  # 1: the best estimate
    mean_estimate: Mapped[float] = mapped_column(Double, nullable=False)
