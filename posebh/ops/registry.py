"""Backend registry and dispatch of posebh's fused operators.

An :class:`Op` is one operation (e.g. ``prototype_similarity``) with several implementations,
its *backends*. Each backend has a ``check`` that says, for the facts of one call (a
:class:`CallInfo`), why it cannot run (a string) or that it can (None). ``backend="auto"``
takes the first usable backend of the op's preference order for the tensors' device type;
naming a backend forces it and raises if it cannot run. :meth:`Op.explain` prints the decision
with the reason every other backend was passed over.

Backend names used by posebh: ``"triton"`` (Triton kernels; CUDA tensors, or CPU tensors under
the interpreter, ``TRITON_INTERPRET=1``), ``"cuda"`` (the CUDA C++ extension), ``"cpp"`` (the
CPU C++ extension), ``"torch"`` (the PyTorch reference, always available).

Adding an op, e.g. ``decode_heatmaps`` in ``posebh/ops/decode.py``::

    from posebh.decode import keypoints_from_heatmaps
    from posebh.ops.registry import CallInfo, Op, register_op
    from posebh.ops import extensions

    DECODE = register_op(
        Op(
            "decode_heatmaps",
            summary="heatmaps [B, K, H, W] -> keypoints [B, K, 2], scores [B, K]",
            preference={"cpu": ("cpp", "torch"), "cuda": ("triton", "cuda", "torch")},
        )
    )

    @DECODE.backend("torch", "the reference, posebh.decode.keypoints_from_heatmaps")
    def _decode_torch(heatmaps, *, kernel=11):
        return keypoints_from_heatmaps(heatmaps, kernel=kernel)

    def _cpp_check(info: CallInfo) -> str | None:
        if info.device.type != "cpu":
            return f"tensors are on {info.device.type}"
        return extensions.unavailable("decode")  # None once the extension loads

    @DECODE.backend("cpp", "C++ extension posebh_decode", check=_cpp_check)
    def _decode_cpp(heatmaps, *, kernel=11):
        return torch.ops.posebh.decode_heatmaps(heatmaps, kernel)

    def decode_heatmaps(heatmaps, *, kernel=11, backend="auto"):
        info = CallInfo.of(heatmaps, needs_grad=False)
        return DECODE(backend, info, heatmaps, kernel=kernel)

then import the module in ``posebh/ops/__init__.py`` and export the public function. C++
sources are registered with :func:`posebh.ops.extensions.register_extension` (see there): they
are compiled on first use, and a build failure only makes that backend unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "BACKENDS",
    "Backend",
    "CallInfo",
    "Op",
    "get_op",
    "ops",
    "register_op",
]

#: Every backend name an op may register, in the order ``explain`` lists them.
BACKENDS: tuple[str, ...] = ("triton", "cuda", "cpp", "torch")

Check = Callable[["CallInfo"], "str | None"]


@dataclass(frozen=True)
class CallInfo:
    """The facts about one call that decide which backends can run it.

    Attributes:
        device: device of the tensors.
        dtype: compute dtype (for the similarity ops: the prototypes' dtype, as the reference).
        input_dtype: dtype of the main input (e.g. fp16 embeddings), or None if the same.
        needs_grad: a gradient w.r.t. a differentiable input will be requested (grad mode on
            and the input requires grad).
        extra: op-specific facts, e.g. ``{"prototypes_need_grad": True}``.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    input_dtype: torch.dtype | None = None
    needs_grad: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(tensor: torch.Tensor, *, dtype: torch.dtype | None = None, **extra: Any) -> CallInfo:
        """The facts of a call whose main input is ``tensor`` (grad from its requires_grad)."""
        needs_grad = bool(extra.pop("needs_grad", tensor.requires_grad))
        return CallInfo(
            device=tensor.device,
            dtype=dtype or tensor.dtype,
            input_dtype=tensor.dtype,
            needs_grad=needs_grad and torch.is_grad_enabled(),
            extra=extra,
        )


def _always(_info: CallInfo) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One implementation of an op.

    Attributes:
        name: one of :data:`BACKENDS`.
        fn: the implementation, called with the op's arguments.
        summary: one line for :meth:`Op.explain` (what it is), or a callable returning it
            (evaluated when explaining, e.g. to report what a loaded extension runs).
        check: None if it can run the call described by a :class:`CallInfo`, else why not.
        decline: None if ``"auto"`` may pick it for the call, else why ``"auto"`` passes it
            over although it could run (e.g. a problem too small to gain anything); forcing
            the backend ignores this.
    """

    name: str
    fn: Callable[..., Any]
    summary: str | Callable[[], str]
    check: Check = _always
    decline: Check = _always

    def describe(self) -> str:
        """The summary line."""
        return self.summary() if callable(self.summary) else self.summary


class Op:
    """An operation with several backends and a per-device preference order.

    Args:
        name: the public name (``posebh.ops.<name>``).
        summary: one line: shapes in, shapes out.
        preference: device type → backend names in the order ``"auto"`` tries them. A backend
            absent from a device's list is never chosen automatically there but can be forced
            (e.g. the Triton interpreter on CPU).
    """

    def __init__(self, name: str, *, summary: str, preference: Mapping[str, Sequence[str]]) -> None:
        self.name = name
        self.summary = summary
        self.preference = {k: tuple(v) for k, v in preference.items()}
        self.backends: dict[str, Backend] = {}

    def __repr__(self) -> str:
        return f"Op({self.name!r}, backends={list(self.backends)})"

    def backend(
        self,
        name: str,
        summary: str | Callable[[], str],
        *,
        check: Check | None = None,
        decline: Check | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``fn`` as backend ``name`` (see :class:`Backend`)."""
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.backends[name] = Backend(name, fn, summary, check or _always, decline or _always)
            return fn

        return register

    def order(self, device: torch.device) -> tuple[str, ...]:
        """Backends ``"auto"`` tries on ``device``, best first."""
        return self.preference.get(device.type, ("torch",))

    def reasons(self, info: CallInfo) -> dict[str, tuple[str | None, str | None]]:
        """Every registered backend → (why it cannot run, why auto declines it), None if not."""
        out: dict[str, tuple[str | None, str | None]] = {}
        for name, backend in self.backends.items():
            try:
                cannot = backend.check(info)
                out[name] = (cannot, None if cannot else backend.decline(info))
            except Exception as exc:  # a check must never break dispatch
                out[name] = (f"check failed: {type(exc).__name__}: {exc}", None)
        return out

    def select(self, backend: str, info: CallInfo) -> Backend:
        """The backend that runs the call: the forced one, or the first usable in order."""
        if backend != "auto":
            if backend not in self.backends:
                known = ", ".join(["auto", *self.backends])
                raise ValueError(f"{self.name}: unknown backend {backend!r} (known: {known})")
            why = self.backends[backend].check(info)
            if why is not None:
                raise RuntimeError(f"{self.name}: backend {backend!r} cannot run this call: {why}")
            return self.backends[backend]
        for name in self.order(info.device):
            chosen = self.backends.get(name)
            if chosen is not None and chosen.check(info) is None and chosen.decline(info) is None:
                return chosen
        raise RuntimeError(f"{self.name}: no backend can run this call\n{self.explain(info)}")

    def __call__(self, backend: str, info: CallInfo, /, *args: Any, **kwargs: Any) -> Any:
        """Run the call on ``select(backend, info)``."""
        return self.select(backend, info).fn(*args, **kwargs)

    def explain(self, info: CallInfo) -> str:
        """Which backend ``"auto"`` runs for ``info`` and why each other one is not used."""
        reasons = self.reasons(info)
        order = self.order(info.device)
        chosen = next((n for n in order if reasons.get(n, ("absent", None)) == (None, None)), None)
        dtype = str(info.dtype).removeprefix("torch.")
        grad = ", with gradient" if info.needs_grad else ""
        lines = [
            f"posebh.ops.{self.name} on {info.device.type} ({dtype}{grad}): "
            + (f"runs {chosen!r}" if chosen else "no backend can run it"),
            f"  {self.summary}",
            f"  auto order on {info.device.type}: {' > '.join(order)}",
        ]
        names = [n for n in BACKENDS if n in self.backends]
        width = max(len(n) for n in names) if names else 0
        for name in names:
            why, declined = reasons[name]
            summary = self.backends[name].describe()
            if name == chosen:
                verdict = f"chosen: {summary}"
            elif why is not None:
                verdict = f"not used: {why}"
            elif declined is not None:
                verdict = f"usable if forced (backend={name!r}), but auto skips it: {declined}"
            elif name not in order:
                verdict = (
                    f"usable if forced (backend={name!r}), never chosen automatically on "
                    f"{info.device.type}: {summary}"
                )
            else:
                verdict = f"usable, but after {chosen!r} in the order: {summary}"
            lines.append(f"  {name:<{width}}  {verdict}")
        return "\n".join(lines)


_OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Add ``op`` to the registry (its name must be new) and return it."""
    if op.name in _OPS and _OPS[op.name] is not op:
        raise ValueError(f"op {op.name!r} is already registered")
    _OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    """The registered op called ``name``."""
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered: {sorted(_OPS)}") from None


def ops() -> dict[str, Op]:
    """All registered ops by name."""
    return dict(_OPS)
