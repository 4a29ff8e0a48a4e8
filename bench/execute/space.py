"""A variant's search space (`tune:` in a suite file): a trial's values put into the parameters,
what Optuna suggests, and the check that runs when the suite loads (every name a parameter, the
space's corners and an inner value construct the model)."""
from __future__ import annotations

import copy

from bench.errors import BenchError
from bench.models import make_model, model_class


def with_values(params: dict, values: dict) -> dict:
    """`params` with each sampled value set; a dotted name sets a key inside a dict parameter."""
    out = copy.deepcopy(params)
    for name, value in values.items():
        *outer, last = name.split(".")
        node = out
        for part in outer:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BenchError(f"tune: {name!r}: parameter {part!r} is not a mapping")
        node[last] = value
    return out


def suggest(trial, space: dict) -> dict:
    values = {}
    for name, r in space.items():
        if r.choices is not None:
            values[name] = trial.suggest_categorical(name, r.choices)
        elif all(isinstance(x, int) for x in (r.low, r.high, r.step or 1)):
            values[name] = trial.suggest_int(name, r.low, r.high, step=r.step or 1, log=r.log)
        else:
            values[name] = trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log)
    return values


def check_space(model: str, params: dict, space: dict, where: str) -> None:
    """Every searched name is a parameter of the model, and the space's corners construct one. A
    model taking **params (CALRec: grouped config dataclasses) names its parameters itself, so for
    it constructing the corners is the check."""
    import inspect

    known = inspect.signature(model_class(model)).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in known.values())
    for name in space:
        if not takes_any and name.split(".")[0] not in known:
            raise BenchError(f"{where}.tune: {name!r} is not a parameter of model {model!r}")
    for probe in _probes(space):
        try:
            make_model(model, with_values(params, probe))
        except BenchError as e:
            raise BenchError(f"{where}.tune: {e}") from None


def _probes(space: dict) -> list[dict]:
    """Values the sampler can draw, to construct the model with before any trial: both corners,
    and a value between them as `suggest` draws it (one step up, or the middle), so a space whose
    corners pass but whose inner values do not (an integer parameter with step 0.5) fails now."""
    corners = [{n: (r.choices[k] if r.choices is not None else (r.low, r.high)[k]) for n, r in space.items()} for k in (0, -1)]
    inner = {}
    for n, r in space.items():
        if r.choices is not None:
            inner[n] = r.choices[len(r.choices) // 2]
        elif all(isinstance(x, int) for x in (r.low, r.high, r.step or 1)):
            inner[n] = r.low + (r.step or 1) if r.low + (r.step or 1) <= r.high else r.low
        else:
            inner[n] = float(r.low + r.step) if r.step is not None and r.low + r.step <= r.high else (r.low + r.high) / 2
    return corners + [inner]
