"""Strict YAML reading that keeps line numbers and rejects duplicate keys.

PyYAML silently keeps the last of two equal keys; a policy author who writes a
parameter twice must hear about it. Mappings become :class:`YMap` (a dict that
remembers where each key and value stood), sequences :class:`YList`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from approval_service.errors import Location, PolicyDefinitionError, PolicySyntaxError


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based
    style: str | None = None  # YAML scalar style: None plain, '"', "'", '|', '>'


class YMap(dict[Any, Any]):
    mark: Mark
    key_marks: dict[Any, Mark]
    value_marks: dict[Any, Mark]


class YList(list[Any]):
    mark: Mark
    marks: list[Mark]


def _mark(node: yaml.Node) -> Mark:
    style = getattr(node, "style", None)
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1, style)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            out = YMap()
            out.mark, out.key_marks, out.value_marks = _mark(node), {}, {}
            for key_node, value_node in node.value:
                key = self.build(key_node)
                if key in out:
                    first = out.key_marks[key]
                    raise PolicyDefinitionError(
                        f"duplicate key `{key}` (first at line {first.line})",
                        Location(
                            self.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1
                        ),
                        "remove one of them; YAML would silently keep only the last",
                    )
                out[key] = self.build(value_node)
                out.key_marks[key] = _mark(key_node)
                out.value_marks[key] = _mark(value_node)
            return out
        if isinstance(node, yaml.SequenceNode):
            seq = YList(self.build(item) for item in node.value)
            seq.mark, seq.marks = _mark(node), [_mark(item) for item in node.value]
            return seq
        try:
            return self.constructor.construct_object(node, deep=True)
        except ValueError:  # an impossible timestamp such as 2025-02-30
            raise PolicySyntaxError(
                f"`{node.value}` is not a real calendar date",
                Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1),
                "write dates as YYYY-MM-DD with a day that exists",
            ) from None


def load_yaml(text: str, file: str) -> Any:
    """Parse one YAML document with marks; raises PolicySyntaxError with file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise PolicySyntaxError(f"YAML: {exc.problem}", where, exc.context) from exc
    except yaml.YAMLError as exc:
        raise PolicySyntaxError(f"YAML: {exc}", Location(file)) from exc
    if node is None:
        return None
    try:
        return _Builder(file).build(node)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise PolicySyntaxError(f"YAML: {exc.problem}", where) from exc
