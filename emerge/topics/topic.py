"""User topic definitions: validated in Python and loaded from YAML/JSON files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emerge.errors import ConfigError, yaml_syntax_error


@dataclass(frozen=True)
class Topic:
    """A topic the user cares about: a name, an optional description and optional example texts."""

    id: int | str
    name: str
    description: str = ""
    examples: list[str] = field(default_factory=list)

    def __post_init__(self):
        label = f"topic {self.id!r}"
        if self.id is None or (isinstance(self.id, str) and not self.id.strip()):
            raise ConfigError("topics", f"a topic has an empty id (name {self.name!r})")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("topics", f"{label} has an empty name")
        if not isinstance(self.description, str):
            raise ConfigError("topics", f"{label}: description must be a string")
        examples = self.examples if self.examples is not None else []
        if isinstance(examples, str) or not all(isinstance(e, str) for e in examples):
            raise ConfigError("topics", f"{label}: examples must be a list of strings")
        object.__setattr__(self, "examples", [e for e in examples if e.strip()])

    def parts(self) -> list[tuple[str, str]]:
        """(kind, text) for each scored part: the name, the description if any, each example."""
        out = [("name", self.name)]
        if self.description.strip():
            out.append(("description", self.description))
        out += [("example", e) for e in self.examples]
        return out


def validate_topics(topics) -> list[Topic]:
    topics = [t if isinstance(t, Topic) else Topic(**t) for t in topics]
    if not topics:
        raise ConfigError("topics", "at least one topic is required")
    seen: dict = {}
    for t in topics:
        if t.id in seen:
            raise ConfigError("topics", f"duplicate topic id {t.id!r} (names {seen[t.id]!r} and {t.name!r})")
        seen[t.id] = t.name
    return topics


def load_topics(path: str | Path) -> list[Topic]:
    """Topics from `.yaml`/`.yml`/`.json`: a list of topics, or a mapping with a `topics` list."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("topics_file", f"no topics file at {str(path)!r}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError("topics_file", f"unknown topic file format {suffix or '(none)'!r}; use .yaml, .yml or .json")
    import yaml

    try:
        data = yaml.safe_load(text) if suffix != ".json" else json.loads(text)
    except yaml.YAMLError as exc:
        raise yaml_syntax_error("topics_file", path, exc) from None
    except json.JSONDecodeError as exc:
        raise ConfigError("topics_file", f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from None
    if isinstance(data, dict):
        data = data.get("topics")
    if not isinstance(data, list):
        raise ConfigError("topics_file", f"{path.name} must hold a list of topics (or a mapping with `topics:`)")
    lines = _entry_lines(text)
    topics, seen = [], {}
    for i, item in enumerate(data):
        try:
            topics.append(_topic(item, i, path.name))
            if topics[-1].id in seen:
                raise ConfigError("topics", f"duplicate topic id {topics[-1].id!r} (names {seen[topics[-1].id]!r} "
                                  f"and {topics[-1].name!r})")
            seen[topics[-1].id] = topics[-1].name
        except ConfigError as exc:  # which entry: the file and the line it starts on
            where = f"{path}, line {lines[i]}" if i < len(lines) else str(path)
            raise ConfigError(exc.field, f"{where}: {str(exc).split(': ', 1)[-1]}") from None
    return validate_topics(topics)


def _topic(item, i: int, file_name: str) -> Topic:
    if not isinstance(item, dict):
        raise ConfigError("topics", f"entry {i} of {file_name} is not a mapping")
    unknown = set(item) - {"id", "name", "description", "examples"}
    if unknown:
        raise ConfigError("topics", f"topic {item.get('id', i)!r} has unknown keys {sorted(unknown)}")
    if "id" not in item:
        raise ConfigError("topics", f"entry {i} of {file_name} has no id")
    if "name" not in item:
        raise ConfigError("topics", f"topic {item['id']!r} has no name")
    return Topic(**item)


def _entry_lines(text: str) -> list[int]:
    """The 1-based line each topic entry starts on (YAML, and JSON read as YAML); [] if unknown."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if k.value == "topics"), None)
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []
