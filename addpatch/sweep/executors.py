"""Where a sweep's tasks run: in this process one after another, or on a Ray cluster.

Both executors take the same calls: `submit(fn, spec, *args)` queues `fn(spec, *args)` (spec is
the task's `ModelSpec`), `next_done(tickets)` waits for one of them, and `result(ticket)` gives
its return value or raises its error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from addpatch.errors import BadInput
from addpatch.sweep.tasks import ModelSpec

TASK_RETRIES = 3  # a task whose worker dies is run again this many times


@dataclass(eq=False)
class LocalTicket:
    fn: Callable[..., Any]
    spec: ModelSpec
    args: tuple[Any, ...]
    done: bool = False
    value: Any = None
    error: BaseException | None = None


@dataclass
class LocalExecutor:
    """Runs queued tasks in this process, preferring tasks of the model already loaded."""

    queue: list[LocalTicket] = field(default_factory=list)
    last_spec: ModelSpec | None = None

    @property
    def gpus(self) -> int:
        return torch.cuda.device_count()

    def describe(self) -> str:
        return "this process, one task after another"

    def submit(self, fn: Callable[..., Any], spec: ModelSpec, *args: Any) -> LocalTicket:
        ticket = LocalTicket(fn, spec, args)
        self.queue.append(ticket)
        return ticket

    def next_done(self, tickets: list[LocalTicket]) -> LocalTicket:
        finished = [t for t in tickets if t.done]
        if finished:
            return finished[0]
        waiting = [t for t in self.queue if t in tickets]
        same_model = [t for t in waiting if t.spec == self.last_spec]
        ticket = (same_model or waiting)[0]
        self.queue.remove(ticket)
        try:
            ticket.value = ticket.fn(ticket.spec, *ticket.args)
        except Exception as error:  # handed to the driver by result()
            ticket.error = error
        ticket.done = True
        self.last_spec = ticket.spec
        return ticket

    def result(self, ticket: LocalTicket) -> Any:
        if ticket.error is not None:
            raise ticket.error
        return ticket.value

    def shutdown(self) -> None:
        self.queue.clear()


class RayExecutor:
    """Runs each task as a Ray task (one GPU each when the work runs on CUDA).

    `address` is what `ray.init` takes: None starts a local Ray instance (or joins the cluster
    in RAY_ADDRESS), `auto` joins the cluster started on this machine with `ray start`, and
    `HOST:PORT` or `ray://HOST:10001` joins a remote one.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BadInput(
                "--ray needs Ray, an optional extra: pip install 'addpatch[ray]'"
            ) from None
        self._ray = ray
        self._started_here = not ray.is_initialized()  # else: the caller's Ray session, kept
        self._remote: dict[Callable[..., Any], Any] = {}
        if not self._started_here:
            return
        options: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address is None and not os.environ.get("RAY_ADDRESS"):
            options.update(num_cpus=num_cpus, include_dashboard=False)
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise BadInput(
                f"cannot reach a Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                f"{error}; start one with `ray start --head` or pass its address to --ray"
            ) from None

    @property
    def gpus(self) -> int:
        return int(self._ray.cluster_resources().get("GPU", 0))

    def describe(self) -> str:
        resources = self._ray.cluster_resources()
        nodes = len([n for n in self._ray.nodes() if n.get("Alive")])
        return (
            f"Ray, {nodes} node(s), {int(resources.get('CPU', 0))} CPUs, "
            f"{int(resources.get('GPU', 0))} GPUs"
        )

    def submit(self, fn: Callable[..., Any], spec: ModelSpec, *args: Any) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(max_retries=TASK_RETRIES)(fn)
        on_gpu = spec.device.startswith("cuda")
        return self._remote[fn].options(num_gpus=1 if on_gpu else 0, num_cpus=1).remote(spec, *args)

    def next_done(self, tickets: list[Any]) -> Any:
        ready, _ = self._ray.wait(tickets, num_returns=1)
        return ready[0]

    def result(self, ticket: Any) -> Any:
        try:
            return self._ray.get(ticket)
        except self._ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def shutdown(self) -> None:
        if self._started_here:
            self._ray.shutdown()


Executor = LocalExecutor | RayExecutor
