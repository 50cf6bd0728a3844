"""A run-config file (`ops: {asset: {config: {...}}}`) checked whole before the first step.

Dagster checks each step's config when the step starts; a bad `min_len` would then surface
only after `raw_texts` ran. Building every asset's config object up front runs the same
validation (the engine configs' own checks) before any work, naming the asset and the field.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from emerge.errors import ConfigError, yaml_syntax_error


def config_classes(assets) -> dict:
    """op name -> the `dg.Config` class its asset function takes as `config` (only assets with one)."""
    out = {}
    for asset in assets:
        op = getattr(asset, "op", None)
        fn = getattr(getattr(op, "compute_fn", None), "decorated_fn", None)
        param = inspect.signature(fn).parameters.get("config") if fn is not None else None
        if param is not None and inspect.isclass(param.annotation):
            out[op.name] = param.annotation
    return out


def load_run_config(path: str | Path, assets) -> dict:
    """The file's run config, every asset's config validated; ConfigError on the first problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"no run-config file at {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise yaml_syntax_error("config", path, exc) from None
    if not isinstance(data, dict) or set(data) - {"ops"}:
        raise ConfigError("config", f"{path} must be a mapping with one key, `ops` (got {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    try:
        return validate_run_config(data, assets, str(path))
    except ConfigError as exc:
        if exc.field == "config":  # the message names the file already
            raise
        line = _key_line(path.read_text(encoding="utf-8"), exc.field.split("."))
        raise ConfigError(exc.field, f"{path}, line {line}: {str(exc).split(': ', 1)[-1]}") from None


def _key_line(text: str, keys: list[str]) -> int:
    """The 1-based line of the deepest of `keys` (ops, asset, field) that the YAML `text` spells out
    (for `ops.spans.min_len`: the `min_len:` line, or the asset's `config:` line when the field is
    not written, e.g. a value missing that the engine requires)."""
    import yaml

    node, line = yaml.compose(text), 1
    for key in [keys[0], keys[1], "config", *keys[2:]]:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == key), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def validate_run_config(data: dict, assets, origin: str = "run config") -> dict:
    """`data` ({ops: {asset: {config: {...}}}}) with every asset's config built once, so the
    engine configs' checks run now; ConfigError naming `origin`, the asset and the field."""
    import pydantic

    ops = data.get("ops") or {}
    classes = config_classes(assets)
    for name, entry in ops.items():
        if name not in classes:
            raise ConfigError("config", f"{origin}: unknown asset {name!r}; configurable: {sorted(classes)}")
        if not isinstance(entry, dict) or set(entry) != {"config"} or not isinstance(entry["config"], dict):
            raise ConfigError("config", f"{origin}: ops.{name} must be {{config: {{field: value, ...}}}}")
        try:
            classes[name](**entry["config"])
        except ConfigError as exc:
            raise ConfigError(f"ops.{name}.{exc.field}", str(exc).split(": ", 1)[-1]) from None
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            cause = first.get("ctx", {}).get("error")
            if isinstance(cause, ConfigError):  # the engine's check, raised inside the Config's validation
                raise ConfigError(f"ops.{name}.{cause.field}", str(cause).split(": ", 1)[-1]) from None
            field = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"ops.{name}.{field}", first["msg"]) from None
    return {"ops": ops}


def check_run_before_work(context, assets) -> None:
    """Run by the first step of a run: the whole run's config (however it was launched: the UI's
    launchpad, a schedule, the CLI) validated before any work, so a bad `stride` for `spans` fails
    here, not after `raw_texts` has read every source."""
    run_config = getattr(getattr(context, "run", None), "run_config", None) or {}
    ops = {k: v for k, v in (run_config.get("ops") or {}).items() if k in config_classes(assets)}
    validate_run_config({"ops": ops}, assets, f"run {context.run_id[:8]}'s config")


def for_job(run_config: dict, job) -> dict:
    """The part of `run_config` that concerns the ops of `job`."""
    names = {node.name for node in job.graph.nodes}
    return {"ops": {k: v for k, v in run_config.get("ops", {}).items() if k in names}}
