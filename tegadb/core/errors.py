"""The one OVSDB error type; its tag is the protocol's own error string."""

from __future__ import annotations

from typing import Any

from .jsonfmt import syntax_text


class OVSDBError(Exception):
    """An OVSDB error object: ``{"error": tag, "details": ..., "syntax": ...}``."""

    def __init__(self, tag: str, details: str | None = None, syntax: Any = None,
                 has_syntax: bool = False) -> None:
        super().__init__(tag if details is None else f"{tag}: {details}")
        self.tag = tag
        self.details = details
        self.syntax = syntax
        self.has_syntax = has_syntax or syntax is not None
        # An error read back from a result array keeps its syntax text as sent.
        self.quoted_syntax: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OVSDBError:
        """The error an error object (e.g. from a result array) describes."""
        error = cls(obj["error"], obj.get("details"))
        error.quoted_syntax = obj.get("syntax")
        return error

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"error": self.tag}
        if self.details is not None:
            obj["details"] = self.details
        if self.quoted_syntax is not None:
            obj["syntax"] = self.quoted_syntax
        elif self.has_syntax:
            obj["syntax"] = syntax_text(self.syntax)
        return obj


def syntax_error(details: str, syntax: Any = None, has_syntax: bool = True) -> OVSDBError:
    return OVSDBError("syntax error", details, syntax, has_syntax)


def constraint_violation(details: str, syntax: Any = None) -> OVSDBError:
    return OVSDBError("constraint violation", details, syntax)
