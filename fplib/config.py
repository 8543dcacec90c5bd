"""Strict settings: dataclasses built from plain mappings, and notebook parameters checked.

An unknown key or a value of the wrong type is an error, never a warning (nanoGPT's rule): a typo in
a parameter file must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ParameterError(ValueError):
    """An unknown parameter, or a parameter of the wrong type."""


def check_type(name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` (lists turned into tuples where a tuple is declared) if it fits ``annotation``.

    Supports the literal types parameters use: bool, int, float (ints accepted), str, None, Optional/
    unions, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]`` and ``dict[str, X]``. Raises
    :class:`ParameterError` naming the parameter otherwise.
    """
    if isinstance(annotation, str):
        raise TypeError(f"{name}: unresolved annotation {annotation!r}")
    origin = typing.get_origin(annotation) or (annotation if annotation in (list, tuple, dict) else None)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if annotation is None or annotation is type(None):
        if value is None:
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return check_type(name, value, arg)
            except ParameterError:
                pass
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple) and isinstance(value, list | tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ParameterError(f"parameter {name!r}: expected {len(args)} items, got {len(value)}")
            return tuple(check_type(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [check_type(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    elif origin is dict and isinstance(value, Mapping):
        kt, vt = args if args else (Any, Any)
        return {check_type(f"{name} key", k, kt): check_type(f"{name}[{k!r}]", v, vt) for k, v in value.items()}
    raise ParameterError(
        f"parameter {name!r}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
    )


def from_dict(cls: type[T], values: Mapping[str, Any] | None = None, **overrides: Any) -> T:
    """Build dataclass ``cls`` from ``values`` (+ ``overrides``); unknown keys and bad types are errors."""
    merged = {**(values or {}), **overrides}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ParameterError(f"{cls.__name__}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: check_type(k, v, hints[k]) for k, v in merged.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


# Names IPython puts in a notebook's namespace that are not parameters.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_params(namespace: Mapping[str, Any]) -> types.SimpleNamespace:
    """Check a notebook's parameters and return them as a namespace.

    Call as ``P = fplib.config.notebook_params(globals())`` in the cell right after the ``parameters``
    cell. The parameters cell declares every parameter with a type annotation (``seed: int = 0``), so
    ``__annotations__`` is the schema; papermill injects overrides as plain assignments in a cell after
    it. Every other public, non-module, non-callable name in the namespace at that point is therefore
    an unknown parameter, and is an error; so is a value that does not fit its annotation.
    """
    schema = dict(namespace.get("__annotations__", {}))
    if not schema:
        raise ParameterError("the notebook's parameters cell declares no annotated parameters")
    # Only the first call can tell parameters from other names: when the cell is run again in
    # JupyterLab, names made by later cells exist too (papermill always runs on a fresh kernel).
    first_call = not namespace.get("_fplib_params_checked", False)
    unknown = first_call and sorted(
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in schema
        and k not in _IPYTHON_NAMES
        and not isinstance(v, types.ModuleType)
        and not callable(v)
    )
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; this notebook's parameters are {sorted(schema)}")
    resolved = {}
    for name, ann in schema.items():
        if name not in namespace:
            raise ParameterError(f"parameter {name!r} is declared but has no value")
        ann = _resolve(ann)
        resolved[name] = check_type(name, namespace[name], ann)
    if isinstance(namespace, dict):
        namespace["_fplib_params_checked"] = True
    return types.SimpleNamespace(**resolved)


def _resolve(ann: Any) -> Any:
    if isinstance(ann, str):  # `from __future__ import annotations` or quoted annotations
        return eval(
            ann,
            {
                "list": list,
                "tuple": tuple,
                "dict": dict,
                "int": int,
                "float": float,  # noqa: S307
                "str": str,
                "bool": bool,
                "None": None,
                "Any": Any,
            },
        )
    return ann
