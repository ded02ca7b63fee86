"""The staged schedule: declarative events → what trains at each step, and the plan table.

An event acts *before* its epoch/step runs, like the official ``before_train_epoch`` hooks.
The state at any step is obtained by replaying the events (pure), except the CPS cluster bank,
which is computed from the prototypes when ``cps_init`` fires and then saved with every
checkpoint.

Freezing follows the release: ``requires_grad = False`` on the part's parameters (the
modules stay in training mode, so their BatchNorm statistics and drop-path keep running, as
in the release); ``prototypes`` freezes the non-parametric bank (no momentum update, no
cross-rank averaging); ``proto_head`` is the embedding network (``EmbFreezeThawHook``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from tabulate import tabulate
from torch import nn

from posebh.training.config import TARGETS, Event, OptimConfig, TrainConfig

__all__ = ["StageState", "apply_state", "event_step", "plan_table", "stage_at", "stages"]


@dataclass(frozen=True)
class StageState:
    """What trains: ``frozen`` parts (subset of ``TARGETS``), CSS on, CPS initialised."""

    frozen: frozenset[str] = field(default_factory=frozenset)
    css: bool = False
    cps: bool = False

    def apply(self, event: Event) -> StageState:
        if event.action == "freeze":
            return replace(self, frozen=self.frozen | {event.target})
        if event.action == "thaw":
            return replace(self, frozen=self.frozen - {event.target})
        if event.action == "css_on":
            return replace(self, css=True)
        if event.action == "css_off":
            return replace(self, css=False)
        if event.action == "cps_init":
            return replace(self, cps=True)
        raise ValueError(event.action)

    def label(self, prototypes: bool = True) -> str:
        """Short description for logs: the trained parts and the extra losses
        (``prototypes=False``: a model without prototype head)."""
        present = TARGETS if prototypes else ("backbone", "heads")
        parts = [t for t in present if t not in self.frozen]
        extra = [n for n, on in (("CSS", self.css), ("CPS", self.cps)) if on]
        return "+".join(parts or ["nothing"]) + (f" ({', '.join(extra)})" if extra else "")


def event_step(event: Event, unit: str, steps_per_epoch: int) -> int:
    """The first step the event applies to."""
    return event.at * steps_per_epoch if unit == "epoch" else event.at


def stage_at(events: Sequence[Event], step: int, unit: str, steps_per_epoch: int) -> StageState:
    """The state in force during step ``step`` (every event with event_step ≤ step applied,
    in the listed order)."""
    state = StageState()
    for e in events:
        if event_step(e, unit, steps_per_epoch) <= step:
            state = state.apply(e)
    return state


def events_at(events: Sequence[Event], step: int, unit: str, steps_per_epoch: int) -> list[Event]:
    """The events that fire right before step ``step``."""
    return [e for e in events if event_step(e, unit, steps_per_epoch) == step]


def stages(
    events: Sequence[Event], total_steps: int, unit: str, steps_per_epoch: int
) -> list[tuple[int, int, StageState]]:
    """Consecutive (first step, last step + 1, state) runs over ``[0, total_steps)``."""
    bounds = sorted(
        {0, total_steps} | {min(event_step(e, unit, steps_per_epoch), total_steps) for e in events}
    )
    out: list[tuple[int, int, StageState]] = []
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        state = stage_at(events, a, unit, steps_per_epoch)
        if out and out[-1][2] == state:
            out[-1] = (out[-1][0], b, state)
        else:
            out.append((a, b, state))
    return out


def _parts(model: nn.Module, target: str) -> Iterable[nn.Parameter]:
    if target == "backbone":
        return model.backbone.parameters()
    if target == "heads":
        return model.heads.parameters()
    if target == "proto_head":
        return model.proto_head.parameters() if model.proto_head is not None else ()
    return ()


def apply_state(model: nn.Module, state: StageState) -> None:
    """Set ``requires_grad`` and the prototype freeze flag to ``state`` (idempotent).

    CPS is not created here: it needs the clustering (see the trainer)."""
    for target in ("backbone", "heads", "proto_head"):
        trainable = target not in state.frozen
        for p in _parts(model, target):
            p.requires_grad_(trainable)
    protos = getattr(model, "keypoint_prototypes", None)
    if protos is not None:
        if "prototypes" in state.frozen:
            protos.freeze()
        else:
            protos.thaw()


def _milestone_lr(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The lr of a stage after warm-up: base × γ^{#milestones passed}."""
    optim: OptimConfig = config.optim
    t = step // steps_per_epoch if config.unit == "epoch" else step
    return optim.lr * optim.gamma ** sum(1 for m in optim.milestones if t >= m)


def plan_table(config: TrainConfig, steps_per_epoch: int | None, total_steps: int | None) -> str:
    """The schedule as a table: one row per stage (steps, epochs, what trains, losses, lr).

    Without ``steps_per_epoch`` (the data not read yet) the rows are in the config's unit.
    """
    unit = config.unit
    known = steps_per_epoch is not None
    spe = steps_per_epoch if known else 1
    if total_steps is None or not known:
        total_steps = config.length * (spe if unit == "epoch" else 1)
    has_protos = config.model.startswith("posebh")
    rows = []
    for i, (a, b, st) in enumerate(stages(config.events, total_steps, unit, spe), start=1):

        def flag(target: str, on: str = "train", st: StageState = st) -> str:
            return "frozen" if target in st.frozen else on

        span = []
        if known or unit == "step":
            span.append(f"{a}–{b - 1}")
        if known or unit == "epoch":
            span.append(
                f"{a // spe}–{b // spe - 1}"
                if a % spe == 0 and b % spe == 0
                else f"{a / spe:.3g}–{b / spe:.3g}"
            )
        rows.append(
            [
                i,
                *span,
                flag("backbone"),
                flag("heads"),
                flag("proto_head") if has_protos else "–",
                flag("prototypes", "learn") if has_protos else "–",
                "on" if st.cps else "–",
                "on" if st.css else "–",
                f"{_milestone_lr(config, a, spe):.3g}",
            ]
        )
    span_headers = []
    if known or unit == "step":
        span_headers.append("steps")
    if known or unit == "epoch":
        span_headers.append("epochs")
    headers = [
        "stage",
        *span_headers,
        "backbone",
        "heads",
        "proto head",
        "prototypes",
        "CPS",
        "CSS",
        "lr",
    ]
    table = tabulate(rows, headers=headers, tablefmt="github")
    ev = ", ".join(f"{unit} {e.at}: {e.describe()}" for e in config.events) or "none"
    return f"{table}\nevents: {ev}"
