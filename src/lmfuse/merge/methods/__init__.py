"""Merge methods: one small file per method, each registered with the parameters it accepts.

A method is a function ``fn(tensors, base, weights, params, rng) -> tensor`` over one tensor name:

- ``tensors``: the merged models' values of that tensor (``base`` excluded), all the same shape, in
  the working dtype, on the working device;
- ``base``: the base model's value (``None`` for methods that take no base);
- ``per_model``: one ``{parameter: value}`` per tensor, already resolved for this tensor (gradients
  interpolated at its layer, filters matched on its name);
- ``params``: the method's global parameters, resolved the same way;
- ``rng``: seeded random numbers for this tensor (``TensorRng``), independent of merge order.

When ``tensors`` is an ``Owned`` list (``write.compute`` passes one), the tensors and ``base`` were
read for this call alone: a method may overwrite them and drop them from the list once used, so
that memory holds the inputs and a few work tensors, not copies of every input. Given a plain list,
a method leaves its arguments untouched; both give the same bits.

``register`` records the legal parameter names and defaults, so the recipe validator rejects any
key a method would not use (never silently dropped) and fills defaults for the others.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch


class Owned(list):
    """A method's input tensors handed over to it (see the module docstring): overwrite at will.

    ``reload_base``, when given, reads ``base`` again: a method may then release ``base``'s memory
    (``base.set_()``) while it works and call ``reload_base()`` when it needs the values back.
    """

    def __init__(
        self, tensors: Iterable[torch.Tensor] = (), reload_base: Callable[[], torch.Tensor] | None = None
    ):
        super().__init__(tensors)
        self.reload_base = reload_base


REQUIRED = object()
"""Default of a parameter that has none: the recipe must give it."""

METHOD_MODULES = (
    "linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare", "breadcrumbs", "della",
    "model_stock", "karcher",
)  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its default, its kind (number or flag) and its legal range."""

    default: Any
    kind: Literal["number", "flag", "integer"] = "number"
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not legal here (``None`` when it is)."""
        if self.kind == "flag":
            return None if isinstance(value, bool) else f"expected true or false, found {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, found {value!r}"
        if self.kind == "integer" and not float(value).is_integer():
            return f"expected an integer, found {value!r}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            return f"expected a value in [{lo}, {hi}], found {value!r}"
        return None


@dataclass(frozen=True)
class MergeMethod:
    """A registered method: the function and what it accepts."""

    name: str
    fn: Callable[..., torch.Tensor]
    model_params: dict[str, Param]
    """Parameters given per model (``models[i].parameters``); global ``parameters`` set their default."""
    global_params: dict[str, Param]
    """Parameters that apply to the whole merge."""
    base: Literal["required", "optional", "unused"]
    """Whether the method needs ``base_model`` (task vectors) or may take one."""
    min_models: int = 1
    """Fewest merged models (the base not counted)."""
    max_models: int | None = None
    random: bool = False
    """Uses random numbers (seeded by ``random_seed`` and the tensor name)."""
    doc: str = field(default="", repr=False)

    @property
    def all_params(self) -> dict[str, Param]:
        return {**self.model_params, **self.global_params}


_REGISTRY: dict[str, MergeMethod] = {}


def register(
    name: str,
    *,
    model_params: dict[str, Param] | None = None,
    global_params: dict[str, Param] | None = None,
    base: Literal["required", "optional", "unused"] = "required",
    min_models: int = 1,
    max_models: int | None = None,
    random: bool = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register ``fn`` as merge method ``name`` with the parameters it accepts."""

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise ValueError(f"merge method {name!r} registered twice")
        _REGISTRY[name] = MergeMethod(
            name, fn, dict(model_params or {}), dict(global_params or {}), base, min_models, max_models,
            random, fn.__doc__ or "",
        )  # fmt: skip
        return fn

    return wrap


def _load_all() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(f"lmfuse.merge.methods.{module}")


def get_method(name: str) -> MergeMethod | None:
    """The method called ``name`` (``None`` if there is none)."""
    _load_all()
    return _REGISTRY.get(name)


def method_names() -> list[str]:
    """Every registered method name (``passthrough`` is handled by graft and listed separately)."""
    _load_all()
    return sorted(_REGISTRY)


class TensorRng:
    """Random numbers for one tensor, reproducible from ``(seed, tensor name, model index)`` alone.

    Each model's mask gets its own CPU generator seeded from a hash of the three, so the masks do
    not depend on the order tensors are merged in, nor on the device the merge runs on.
    """

    def __init__(self, seed: int, tensor: str) -> None:
        self.seed = seed
        self.tensor = tensor

    def generator(self, index: int) -> torch.Generator:
        digest = hashlib.sha256(f"{self.seed}\0{self.tensor}\0{index}".encode()).digest()
        return torch.Generator("cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def uniform(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) numbers shaped like ``like``, on its device, float32."""
        values = torch.rand(like.shape, generator=self.generator(index), dtype=torch.float32)
        return values.to(like.device)


WEIGHT = Param(1.0, doc="the model's weight")
DENSITY = Param(1.0, low=0.0, high=1.0, doc="fraction of the task vector kept")
LAMBDA = Param(1.0, doc="scale of the merged task vector")
NORMALIZE_TRUE = Param(True, "flag", doc="divide by the sum of the weights")
NORMALIZE_FALSE = Param(False, "flag", doc="divide by the sum of the weights")
INT8_MASK = Param(
    False,
    "flag",
    doc="mergekit stores masks in int8 to save memory; lmfuse's masks are always 1-byte bool, so "
    "true and false give the same result",
)
RESCALE = Param(True, "flag", doc="divide kept entries by their keep probability (DARE's rescale)")
