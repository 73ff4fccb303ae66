"""Schema files as ovsdb-client and ovsdb-tool read them, with their error messages."""

from __future__ import annotations

import json

from ..core.errors import OVSDBError, syntax_text
from ..core.jsonfmt import ovs_parsed
from ..core.schema import DbSchema


class SchemaFileError(ValueError):
    """A schema file that cannot be read; the message is OVS's."""


def error_text(error: OVSDBError) -> str:
    """An error as OVS's ``ovsdb_error_to_string`` words it."""
    syntax = error.quoted_syntax
    if syntax is None and error.has_syntax:
        syntax = syntax_text(error.syntax)
    return ("" if syntax is None else f'syntax "{syntax}": ') + str(error)


def read_schema(path: str) -> DbSchema:
    """The schema in file ``path``; SchemaFileError worded as "failed to read schema"."""
    unreadable = f'failed to read schema: "{path}" could not be read as JSON'
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise SchemaFileError(f'{unreadable} (error opening "{path}": {e.strerror or e})') from None
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise SchemaFileError(f"{unreadable} ({e})") from None
    try:
        return DbSchema.from_json(ovs_parsed(parsed))
    except OVSDBError as e:
        raise SchemaFileError(f"failed to read schema: {error_text(e)}") from None
