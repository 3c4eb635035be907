"""Orchestration: the config store, run records, data-path registry, the Prefect flow and the `cai` CLI."""

__all__: list[str] = []
