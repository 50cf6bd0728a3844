"""Dagster wiring of the Emerge engine: assets, partitions, jobs and Definitions."""
