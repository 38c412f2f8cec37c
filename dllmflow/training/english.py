"""Small English helpers for writing questions: verb forms and sentence case."""

from __future__ import annotations


def third_person(verb: str) -> str:
    v = verb.lower()
    if v.endswith("s") and not v.endswith("ss"):
        return v
    if v.endswith(("ss", "sh", "ch", "x", "z", "o")):
        return v + "es"
    if v.endswith("y") and len(v) > 1 and v[-2] not in "aeiou":
        return v[:-1] + "ies"
    return v + "s"


def base_form(verb: str) -> str:
    v = verb.lower()
    if v.endswith("ies"):
        return v[:-3] + "y"
    if v.endswith(("sses", "shes", "ches", "xes", "zes")):
        return v[:-2]
    if v.endswith("s") and not v.endswith("ss"):
        return v[:-1]
    return v


def lower_first(s: str) -> str:
    return s[0].lower() + s[1:] if s and not s[:2].isupper() else s
