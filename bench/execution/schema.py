"""What a config may say and how it is checked: the type of every key (``SCHEMA``, as
bench.contract.params constraints; a wrong type is one error line naming the key, not a traceback),
the blocks' keys, and the ``[families]`` of methods with their ``@name`` references (resolved with
cycles and unknown names refused).
"""
from __future__ import annotations

import re

from bench import BenchError
from bench.contract import registry
from bench.contract.params import MAX_SEED, Check, Interval, InvalidParameter, check as check_values


#: At most this many seeds per invocation (a typo such as 0-99999 would otherwise queue 10^5 runs).
MAX_SEEDS = 1000


def _text_list(what: str) -> Check:
    return Check(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), f"a list of {what}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tables(example: str) -> Check:
    return Check(lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
                 f"a list of tables ({example})")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


_SEED = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED,
              f"an integer from 0 to {MAX_SEED}")


#: What each key of a config takes (bench.contract.params constraints, as for a method's parameters): checked
#: per file before anything is built, so a wrong type is one error line naming the key, not a traceback.
SCHEMA = {
    "base": [Check(lambda v: isinstance(v, str) and v.strip() != "", 'a file name, e.g. "paper.toml"')],
    "name": [Check(lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None,
                   "a name of letters, digits, '.', '-' and '_' (it names the results folder; no path "
                   "separators)")],
    "description": [str],
    "protocol": [str],
    "seeds": [_SEED, Check(lambda v: isinstance(v, list) and v != [] and all(_SEED.accepts(x) for x in v),
                           f"a non-empty list of integers from 0 to {MAX_SEED}")],
    "threshold": [str],
    "alpha": [Interval(float, 0, 1, closed="neither")],
    "datasets": [str, _text_list("dataset names or files")],
    "methods": [str, _text_list("method specs")],
    "override": [_tables("[[override]] blocks with methods, datasets and params")],
    "sweep": [_tables("[[sweep]] blocks with methods, param and values")],
    "contamination": [Interval(float, 0, 1),
                      Check(lambda v: isinstance(v, list) and all(Interval(float, 0, 1).accepts(x) for x in v),
                            "a list of numbers in [0, 1]")],
    "label_col": [str],
    "time_limit": [Interval(float, 0, None, closed="neither")],
    "compile": [bool],
    "families": [Check(lambda v: isinstance(v, dict),
                       'a table of families, e.g. [families] advae = ["advae", "e-advae", "g-advae"]')],
    "featured": [str, _text_list("method names or @families")],
    "baseline": [Check(lambda v: isinstance(v, str) and v.strip() != "", 'a method spec, e.g. "advae"')],
    "per_dataset": [Check(lambda v: isinstance(v, dict),
                          'a table of tables, e.g. [per_dataset."@backbone"] latent_dim = { cardio = 7 }')],
}


OVERRIDE_SCHEMA = {
    "methods": [str, _text_list("method names")],
    "datasets": [str, _text_list("dataset names")],
    "params": [Check(lambda v: isinstance(v, dict), "a table, e.g. params = { m_x = 2.0 }")],
}


SWEEP_SCHEMA = {
    "methods": [str, _text_list("method specs")],
    "param": [Check(lambda v: isinstance(v, str) and v.isidentifier(), "a parameter name, e.g. \"m_x\"")],
    "values": [Check(lambda v: isinstance(v, list) and v != [] and
                     all(isinstance(x, (str, int, float, bool)) for x in v),
                     "a non-empty list of values, e.g. [1.0, 2.0]")],
}


#: A family's members: method specs and ``@other`` families.
FAMILY_MEMBERS = [_text_list("method specs and @families, e.g. [\"@advae\", \"ae\"]")]


#: A ``per_dataset`` entry: its parameters.
PER_DATASET_PARAMS = [Check(lambda v: isinstance(v, dict),
                            "a table of parameter = { dataset = value, ... }, e.g. latent_dim = { cardio = 7 }")]


#: One parameter of a ``per_dataset`` entry: its value per dataset.
PER_DATASET_VALUES = [Check(lambda v: isinstance(v, dict) and not any(isinstance(x, dict) for x in v.values()),
                            "a table of dataset = value, e.g. { letter = 11, cardio = 7 }")]


_KEYS = set(SCHEMA)


#: A family's name: lowercase kebab case; it is always referenced as ``@name``.
_FAMILY = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


_METHOD = re.compile(r"[A-Za-z0-9_:.\-]+")  # a method name as a spec starts (bench.contract.registry)


def check_schema(where: str, schema: dict, raw: dict, required=()) -> None:
    """BenchError for a key ``schema`` does not have, a missing required key, or the first value of
    the wrong type: ``config x.toml: alpha must be a number in (0, 1), got 'high'``."""
    unknown = set(raw) - set(schema)
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(schema))}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise BenchError(f"{where}: needs {', '.join(required)} (missing {', '.join(missing)})")
    try:
        check_values(where, schema, raw)
    except InvalidParameter as exc:
        raise BenchError(f"{where}: {exc.detail}") from None


def _family_list(families: dict) -> str:
    return (f"the config's families: {', '.join('@' + n for n in sorted(families))}" if families
            else "the config defines no [families]")


def resolve_families(families: dict, origin: dict) -> dict[str, tuple[str, ...]]:
    """Each family's method specs, its ``@other`` members expanded in place (in order, a spec listed
    twice kept at its first place). ``origin``: the file that defines each family, for the errors (a
    family that includes itself, directly or not, or includes an unknown family)."""
    done: dict[str, tuple[str, ...]] = {}

    def resolve(name: str, chain: tuple) -> tuple[str, ...]:
        if name in done:
            return done[name]
        if name in chain:
            loop = chain[chain.index(name):]
            raise BenchError(f"config {origin.get(loop[0], '?')}: family @{loop[0]} includes itself ("
                             f"{' -> '.join('@' + n for n in (*loop, name))})")
        out = []
        for member in families[name]:
            if member.startswith("@"):
                if member[1:] not in families:
                    raise BenchError(f"config {origin.get(name, '?')}: family @{name} includes unknown family "
                                     f"{member}; {_family_list(families)}")
                out += resolve(member[1:], (*chain, name))
            else:
                out.append(member)
        done[name] = tuple(dict.fromkeys(out))
        return done[name]

    for name in families:
        resolve(name, ())
    return done


def expand_families(items, families: dict, where: str, what: str = "", names: bool = False) -> list[str]:
    """``items`` with each ``@family`` replaced by its specs, in place, without duplicates (first place
    wins). ``names``: a family's members by their method names, for [[override]] and per_dataset, which
    match a run's method name (``"gan[score=anogan]"`` -> ``"gan"``); items written without ``@`` are
    left as they are."""
    out = []
    for item in items:
        if not item.startswith("@"):
            out.append(item)
        elif item[1:] not in families:
            raise BenchError(f"{where}: unknown family {item}{' in ' + what if what else ''}; "
                             f"{_family_list(families)}")
        else:
            out += [registry.parse_spec(m)[0] if names else m for m in families[item[1:]]]
    return list(dict.fromkeys(out))
