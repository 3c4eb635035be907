"""Override merging: nested keys merge, the override wins, null removes a key, inputs stay unchanged."""

from __future__ import annotations

import copy

from flows.store.config_merge import deep_merge


def test_nested_keys_merge_and_override_wins() -> None:
    base = {"host": "db", "port": 5432, "options": {"sslmode": "require", "timeout": 10}}
    override = {"port": 6432, "options": {"timeout": 30}}
    assert deep_merge(base, override) == {"host": "db", "port": 6432, "options": {"sslmode": "require", "timeout": 30}}


def test_null_in_override_removes_the_key_at_any_depth() -> None:
    base = {"bucket": "b", "prefix": "in/", "extra": {"a": 1, "b": 2}}
    assert deep_merge(base, {"prefix": None, "extra": {"a": None}}) == {"bucket": "b", "extra": {"b": 2}}


def test_scalar_replaces_object_and_object_replaces_scalar() -> None:
    assert deep_merge({"x": {"a": 1}}, {"x": 5}) == {"x": 5}
    assert deep_merge({"x": 5}, {"x": {"a": 1}}) == {"x": {"a": 1}}


def test_missing_sides_and_inputs_left_untouched() -> None:
    base = {"a": {"b": 1}}
    override = {"a": {"c": 2}}
    before = (copy.deepcopy(base), copy.deepcopy(override))
    assert deep_merge(None, None) == {}
    assert deep_merge(base, None) == base
    assert deep_merge(None, override) == override
    deep_merge(base, override)
    assert (base, override) == before
