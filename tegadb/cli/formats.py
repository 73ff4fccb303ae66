"""ovsdb-client's output, reproduced byte for byte.

Everything here is pure text: tables of cells rendered as ``table``, ``list``,
``html``, ``csv`` or ``json`` (OVS ``lib/table.c``), cell data as ``string``,
``bare`` or ``json``, OVS's own JSON text (sorted members, its "pretty"
layout, ``%.15g`` reals), the row order of ``dump``, the tables ``monitor``
prints for each update, and the hash order in which ovsdb-client lists
tables, columns and the rows of an update.  Verified against ovsdb-client
3.1 by tests/integration/test_cli_client.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..core import values
from ..core.atoms import UUID_RE
from ..core.errors import OVSDBError
from ..core.hashorder import ovs_member_order
from ..core.jsonfmt import ovs_json, ovs_parsed
from ..core.types import Type

FORMATS = ("table", "list", "html", "csv", "json")
DATA_FORMATS = ("string", "bare", "json")


@dataclass(frozen=True)
class Style:
    """The output options: ``--format``, ``--data``, ``--no-headings``, ``--pretty``."""

    format: str = "table"
    data: str = "string"
    headings: bool = True
    pretty: bool = False


class JsonCell(NamedTuple):
    """A cell holding OVSDB JSON; with a column type it is shown as the datum."""

    json: Any
    type: Type | None = None


# A str is literal text, shown as it is in every style; None is an empty cell
# (blank in text, null in JSON).
Cell = str | JsonCell | None


@dataclass
class Table:
    headings: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str | None = None
    time: str | None = None  # --timestamp: printed above the table (see `timestamp`)


def timestamp(now: float | None = None) -> str:
    """The time OVS puts above a table for ``--timestamp``: UTC, milliseconds."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"


# --- cells -------------------------------------------------------------------

def _atom_to_bare(base_type: str, atom: Any) -> str:
    return atom if base_type == "string" else values.atom_to_string(base_type, atom)


def datum_to_string(type_: Type, datum: values.Datum) -> str:
    """``ovsdb_datum_to_string``: ``[a, b]``, ``{k=v}``, ``[]``, ``{}``, or a
    lone element bare when the type holds at most one (``x``, ``k=v``)."""
    key = type_.key.type
    if type_.value is not None:
        value = type_.value.type
        body = ", ".join(f"{values.atom_to_string(key, k)}={values.atom_to_string(value, v)}"
                         for k, v in datum)
        brackets = "{}"
    else:
        body = ", ".join(values.atom_to_string(key, a) for a in datum)
        brackets = "[]"
    if type_.n_max > 1 or not datum:
        return brackets[0] + body + brackets[1]
    return body


def datum_to_bare(type_: Type, datum: values.Datum) -> str:
    """``ovsdb_datum_to_bare``: elements separated by spaces, strings unquoted."""
    key = type_.key.type
    if type_.value is not None:
        value = type_.value.type
        return " ".join(f"{_atom_to_bare(key, k)}={_atom_to_bare(value, v)}" for k, v in datum)
    return " ".join(_atom_to_bare(key, a) for a in datum)


def cell_text(cell: Cell, style: Style) -> str:
    """A cell's text in ``style`` (OVS ``cell_to_text``)."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    if style.data == "json" or cell.type is None:
        return ovs_json(cell.json)
    try:
        datum = values.parse(cell.type, cell.json)
    except OVSDBError:
        return ovs_json(cell.json)  # OVS falls back to the JSON text too
    if style.data == "string":
        return datum_to_string(cell.type, datum)
    return datum_to_bare(cell.type, datum)


# --- tables ------------------------------------------------------------------

class Printer:
    """Renders the tables of one ovsdb-client run, one at a time.

    Like OVS's ``table_print``, the ``table``, ``list`` and ``csv`` formats put
    a blank line before every table but the first one the program prints, so
    a command that prints as it goes (``monitor``) keeps one Printer.
    """

    def __init__(self, style: Style) -> None:
        self.style = style
        self._first = True

    def render(self, table: Table) -> str:
        text = _RENDERERS[self.style.format](table, self.style)
        if self.style.format not in ("table", "list", "csv"):
            return text
        if self._first:
            self._first = False
            return text
        return "\n" + text


def render(tables: Iterable[Table], style: Style) -> str:
    """All of ``tables`` as one ovsdb-client run prints them."""
    printer = Printer(style)
    return "".join(printer.render(table) for table in tables)


def _width(text: str) -> int:
    return len(text.encode())  # OVS pads to a width in bytes


def _finish_line(line: str) -> str:
    return line.rstrip(" ") + "\n"


def _caption(table: Table) -> str:
    """The time (with --timestamp) and caption lines that open a table."""
    time_line = "" if table.time is None else table.time + "\n"
    return time_line + ("" if table.caption is None else table.caption + "\n")


def _render_table(table: Table, style: Style) -> str:
    texts = [[cell_text(cell, style) for cell in row] for row in table.rows]
    widths = []
    for x, heading in enumerate(table.headings):
        width = max((_width(row[x]) for row in texts), default=0)
        widths.append(max(width, _width(heading)) if style.headings else width)

    def line(cells: list[str]) -> str:
        return _finish_line(" ".join(text + " " * (w - _width(text))
                                     for text, w in zip(cells, widths)))

    out = [_caption(table)]
    if style.headings:
        out.append(line(table.headings))
        out.append(line(["-" * w for w in widths]))
    out.extend(line(row) for row in texts)
    return "".join(out)


def _render_list(table: Table, style: Style) -> str:
    rows = []
    for row in table.rows:
        lines = [cell_text(cell, style) + "\n" for cell in row]
        if style.headings:
            lines = [f"{heading:<20}: {text}" for heading, text in zip(table.headings, lines)]
        rows.append("".join(lines))
    return _caption(table) + "\n".join(rows)


def _csv_cell(text: str) -> str:
    if not any(c in text for c in '\n",'):
        return text
    return '"' + text.replace('"', '""') + '"'


def _render_csv(table: Table, style: Style) -> str:
    out = [_caption(table)]
    if style.headings:
        out.append(",".join(_csv_cell(h) for h in table.headings) + "\n")
    for row in table.rows:
        out.append(",".join(_csv_cell(cell_text(cell, style)) for cell in row) + "\n")
    return "".join(out)


_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


def _html_escape(text: str) -> str:
    return text.translate(_HTML_ESCAPES)


def _html_cell(element: str, content: str) -> str:
    """Escaped content, each UUID in it turned into a link to its row."""
    out = []
    pos = 0
    while pos < len(content):
        if UUID_RE.match(content[pos:pos + 36]):
            uuid = content[pos:pos + 36]
            out.append(f'<a href="#{uuid}">{uuid[:8]}</a>')
            pos += 36
        else:
            out.append(_html_escape(content[pos]))
            pos += 1
    return f"    <{element}>{''.join(out)}</{element}>\n"


def _render_html(table: Table, style: Style) -> str:
    out = ["" if table.time is None else table.time + "\n", "<table border=1>\n"]
    if table.caption is not None:
        out.append(_html_cell("caption", table.caption))
    if style.headings:
        out.append("  <tr>\n")
        out.extend(_html_cell("th", heading) for heading in table.headings)
        out.append("  </tr>\n")
    for row in table.rows:
        out.append("  <tr>\n")
        for heading, cell in zip(table.headings, row):
            text = cell_text(cell, style)
            if heading == "_uuid":
                # The row's anchor; OVS shows its first 8 bytes.
                short = text.encode()[:8].decode(errors="ignore")
                out.append(f'    <td><a name="{_html_escape(text)}">'
                           f"{_html_escape(short)}</a></td>\n")
            else:
                out.append(_html_cell("td", text))
        out.append("  </tr>\n")
    out.append("</table>\n")
    return "".join(out)


def _render_json(table: Table, style: Style) -> str:
    # Cells keep their JSON whatever --data says; literal text becomes a string.
    obj: dict[str, Any] = {
        "headings": table.headings,
        "data": [[cell if cell is None or isinstance(cell, str) else cell.json for cell in row]
                 for row in table.rows],
    }
    if table.caption is not None:
        obj["caption"] = table.caption
    if table.time is not None:
        obj["time"] = table.time  # (ovsdb-client 3.1 crashes here instead)
    return ovs_json(obj, style.pretty) + "\n"


_RENDERERS: dict[str, Callable[[Table, Style], str]] = {
    "table": _render_table,
    "list": _render_list,
    "html": _render_html,
    "csv": _render_csv,
    "json": _render_json,
}


# --- monitor -----------------------------------------------------------------

@dataclass(frozen=True)
class Monitored:
    """A table that ``monitor`` watches, and the columns it shows, in order."""

    name: str
    columns: tuple[tuple[str, Type], ...]


# The members of a <row-update2>, in the order ovsdb-client looks for them.
ROW_UPDATE2_KINDS = ("delete", "initial", "modify", "insert")
_ABSENT = object()


def monitor_tables(updates: Any, monitored: Iterable[Monitored], version: int,
                   initial: bool = False,
                   time: str | None = None) -> tuple[list[Table], list[str]]:
    """The tables ovsdb-client prints for one monitor reply or update.

    ``updates`` is a <table-updates> (``version`` 1; ``initial`` for the
    reply) or a <table-updates2> (versions 2 and 3).  There is one table per
    monitored table present, captioned with its name when several are
    monitored; its rows come in the hash order of their uuids on the wire.
    Also returns the complaints ovsdb-client writes to stderr about parts it
    cannot show.
    """
    monitored = list(monitored)
    errors: list[str] = []
    if not isinstance(updates, dict):
        return [], [f"<table-updates{'' if version == 1 else '2'}> is not object"]
    tables = []
    for mt in monitored:
        if mt.name not in updates:
            continue
        update = updates[mt.name]
        if not isinstance(update, dict):
            errors.append(f"<table-update> for table {mt.name} is not object")
            continue
        table = Table(["row", "action", *(name for name, _ in mt.columns)],
                      caption=mt.name if len(monitored) > 1 else None, time=time)
        for uuid in ovs_member_order(update):
            if version == 1:
                _add_row_update(table, mt, uuid, update[uuid], initial, errors)
            else:
                _add_row_update2(table, mt, uuid, update[uuid], errors)
        tables.append(table)
    return tables, errors


def _add_row_update(table: Table, mt: Monitored, uuid: str, row_update: Any, initial: bool,
                    errors: list[str]) -> None:
    """A <row-update>: one line, or two ("old" and "new") for a modification."""
    if not isinstance(row_update, dict):
        errors.append("<row-update> is not object")
        return
    old = row_update.get("old", _ABSENT)
    new = row_update.get("new", _ABSENT)
    if initial:
        _add_row(table, mt, uuid, "initial", new, errors)
    elif old is _ABSENT:
        _add_row(table, mt, uuid, "insert", new, errors)
    elif new is _ABSENT:
        _add_row(table, mt, uuid, "delete", old, errors)
    else:
        _add_row(table, mt, uuid, "old", old, errors)
        _add_row(table, mt, "", "new", new, errors)


def _add_row_update2(table: Table, mt: Monitored, uuid: str, row_update: Any,
                     errors: list[str]) -> None:
    """A <row-update2>: one line; a deletion shows no values."""
    if not isinstance(row_update, dict):
        errors.append("<row-update2> is not object")
        return
    kind = next((k for k in ROW_UPDATE2_KINDS if k in row_update), None)
    if kind is None:
        return
    row = row_update[kind]
    if kind != "delete":
        _add_row(table, mt, uuid, kind, row, errors)
    elif row is not None:
        errors.append("delete method does not expect <row>")
    else:
        table.rows.append([uuid, kind, *(None for _ in mt.columns)])


def _add_row(table: Table, mt: Monitored, uuid: str, action: str, row: Any,
             errors: list[str]) -> None:
    if row is _ABSENT:
        errors.append(f"missing {action} row")
    elif not isinstance(row, dict):
        errors.append("<row> is not object")
    else:
        # A column the row leaves out is an empty cell (e.g. unchanged in "old").
        table.rows.append([uuid, action, *(
            JsonCell(ovs_parsed(row[name]), type_) if name in row else None
            for name, type_ in mt.columns)])


# --- dump --------------------------------------------------------------------

def _datum_key(type_: Type, datum: values.Datum) -> tuple[Any, ...]:
    # ovsdb_datum_compare_3way: size first, then keys, then values.
    if type_.value is None:
        return (len(datum), datum)
    return (len(datum), tuple(k for k, _ in datum), tuple(v for _, v in datum))


def dump_table(name: str, columns: dict[str, Type], rows: list[Any]) -> Table:
    """The table ``ovsdb-client dump`` prints for one table's selected rows.

    Columns are sorted by name (``_version`` left out).  Rows are sorted by
    their non-uuid columns, then by their uuid columns, for reproducible
    output.  Raises TypeError or ValueError on a malformed reply, OVSDBError
    on bad data.
    """
    names = sorted(n for n in columns if n != "_version")
    types = [columns[n] for n in names]
    data = []
    for y, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"row {y} in table {name} response is not a JSON object: "
                             f"{ovs_json(row)}")
        datums = []
        for column, type_ in zip(names, types):
            if column not in row:
                raise ValueError(f"row {y} in table {name} response lacks {column} column")
            datums.append(values.parse_unchecked(type_, row[column]))
        data.append(datums)
    order = ([x for x, t in enumerate(types) if t.key.type != "uuid"]
             + [x for x, t in enumerate(types) if t.key.type == "uuid"])
    data.sort(key=lambda datums: [_datum_key(types[x], datums[x]) for x in order])
    cells: list[list[Cell]] = [
        [JsonCell(values.to_json(t, d), t) for t, d in zip(types, datums)] for datums in data]
    return Table(names, cells, f"{name} table")
