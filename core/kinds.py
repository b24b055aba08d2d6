"""Structured messages: typed kinds whose fields a reader (a program or a person) can rely on.

A structured message is a ``send`` with a ``kind`` other than ``text`` and its fields in
``data``. The fields are checked here: every one is required, a string field must hold
words, a list field is a list of strings, and nothing else may ride in ``data`` but an optional
``context`` snapshot (:func:`check_context`), so a peer cannot slip in the keys other parts of
the hub give a meaning to (a bridge's ``origin``, a mail's ``email``). The message's text is
made from the fields (:func:`body_of`), Markdown every surface already renders, so Telegram,
Slack, mail and the terminal show ``Decision: ...`` / ``Rationale: ...`` with no code of their
own; the sender's own text, if any, follows the fields.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import InvalidRequest, TooLarge
from .fields import MAX_SUMMARY

Kind = Literal["text", "question", "decision", "context_share", "review_request", "handoff"]
KIND_NAMES: tuple[str, ...] = get_args(Kind)

CONTEXT_MAX_FILES = 20
CONTEXT_MAX_CHARS = 512  # a branch name, a directory or a file path
CONTEXT_KEYS = ("branch", "cwd", "changed_files", "summary")
# what str.splitlines breaks a line at: a path holding one could fake the next label
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


@dataclass(frozen=True)
class FieldSpec:
    """One field of a kind: its ``name`` in ``data``, the ``label`` readers see, whether it is
    a list of strings, and whether it is shown as code (a path, where ``_`` is no emphasis)."""

    name: str
    label: str
    is_list: bool = False
    code: bool = False


@dataclass(frozen=True)
class KindSpec:
    """A structured kind: its fields, and a title line for a kind whose labels alone would not
    say what it is."""

    fields: tuple[FieldSpec, ...]
    title: str = ""


KINDS: dict[str, KindSpec] = {
    "question": KindSpec((FieldSpec("question", "Question"),
                          FieldSpec("format", "Expected answer"))),
    "decision": KindSpec((FieldSpec("decision", "Decision"),
                          FieldSpec("rationale", "Rationale"))),
    "context_share": KindSpec((FieldSpec("summary", "Context"),)),
    "review_request": KindSpec((FieldSpec("path", "Review requested", code=True),
                                FieldSpec("description", "Description"))),
    "handoff": KindSpec((FieldSpec("completed", "Completed"),
                         FieldSpec("remaining", "Remaining"),
                         FieldSpec("files_modified", "Files modified", is_list=True, code=True),
                         FieldSpec("decisions", "Decisions", is_list=True)),
                        title="Handoff"),
}

FIELDS_HELP = "; ".join(
    f"{name}: {', '.join(f.name + (' (list)' if f.is_list else '') for f in spec.fields)}"
    for name, spec in KINDS.items()
)


def _refuse(kind: str, field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"a {kind} message {problem}", field=field, kind=kind)


def check_fields(kind: str, data: Any) -> dict[str, Any] | None:
    """``data`` checked for ``kind``: the fields it holds (and its ``context``), or ``None`` for
    a text message; anything missing, mistyped or unknown is refused naming field and kind."""
    if kind == "text":
        if data is not None:
            raise _refuse("text", "data", "carries no data; data is for the structured kinds "
                          f"({', '.join(KINDS)})")
        return None
    spec = KINDS.get(kind)
    if spec is None:
        raise InvalidRequest(f"no message kind {kind!r}; use one of {', '.join(KIND_NAMES)}",
                             field="kind", kind=kind)
    if not isinstance(data, dict):
        raise _refuse(kind, "data", f"needs data holding {_names(spec)}")
    names = {f.name for f in spec.fields}
    unknown = sorted(set(data) - names - {"context"})
    if unknown:
        raise _refuse(kind, unknown[0], f"has no field {unknown[0]!r}; its fields are "
                      f"{_names(spec)}")
    fields = {f.name: _check_value(kind, f, data.get(f.name)) for f in spec.fields}
    if data.get("context") is not None:
        fields["context"] = check_context(kind, data["context"])
    return fields


def _names(spec: KindSpec) -> str:
    return ", ".join(f.name for f in spec.fields)


def _check_value(kind: str, field: FieldSpec, value: Any) -> Any:
    if value is None:
        raise _refuse(kind, field.name, f"needs {field.name} ({field.label.lower()})")
    if field.is_list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _refuse(kind, field.name, f"needs {field.name} as a list of strings")
        return [_one_line(kind, field, v) for v in value if v.strip()]
    if not isinstance(value, str):
        raise _refuse(kind, field.name, f"needs {field.name} as a string")
    if not value.strip():
        raise _refuse(kind, field.name, f"needs {field.name} to say something; it is empty")
    return _one_line(kind, field, value)


def _one_line(kind: str, field: FieldSpec, value: str) -> str:
    """A code field (a path) is one line: one holding a line break is refused, as it would
    be shown raw and could fake the label after it."""
    if field.code and not LINE_BREAKS.isdisjoint(value):
        raise _refuse(kind, field.name, f"needs {field.name} on one line: a path holds no "
                      f"line break")
    return value


def check_context(kind: str, context: Any) -> dict[str, Any]:
    """A context snapshot (``branch``, ``cwd``, ``changed_files``, ``summary``; each optional)
    checked and bounded: it is shown to readers and stored with the message."""
    if not isinstance(context, dict):
        raise _refuse(kind, "context", "needs context as an object")
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise _refuse(kind, "context", f"has no context key {unknown[0]!r}; its keys are "
                      f"{', '.join(CONTEXT_KEYS)}")
    out: dict[str, Any] = {}
    for key in ("branch", "cwd", "summary"):
        value = context.get(key)
        if value is None:
            continue
        limit = MAX_SUMMARY if key == "summary" else CONTEXT_MAX_CHARS
        if not isinstance(value, str) or len(value) > limit:
            raise _refuse(kind, "context", f"needs context.{key} as a string of at most "
                          f"{limit} characters")
        out[key] = value
    files = context.get("changed_files")
    if files is not None:
        if not isinstance(files, list) or len(files) > CONTEXT_MAX_FILES or not all(
                isinstance(f, str) and len(f) <= CONTEXT_MAX_CHARS for f in files):
            raise _refuse(kind, "context", f"needs context.changed_files as at most "
                          f"{CONTEXT_MAX_FILES} paths of at most {CONTEXT_MAX_CHARS} characters")
        out["changed_files"] = list(files)
    return out


def _code(text: str) -> str:
    """``text`` as a Markdown code span, whatever backticks it holds."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _shown(field: FieldSpec, value: str) -> str:
    return _code(" ".join(value.split())) if field.code else value


def body_of(kind: str, fields: dict[str, Any], text: str = "") -> str:
    """The readable text of a structured message: one ``Label: value`` line per field (a value
    of several lines, or a list, is a block of its own so it cannot run into the next label),
    then ``text``. Labels carry no Markdown marks: the terminal shows a body as written."""
    spec = KINDS[kind]
    blocks: list[str] = []
    lines = [spec.title] if spec.title else []

    def close() -> None:
        if lines:
            blocks.append("\n".join(lines))
            lines.clear()

    for field in spec.fields:
        value = fields[field.name]
        if field.is_list and value:
            close()
            items = "\n".join(f"- {_shown(field, ' '.join(v.split()))}" for v in value)
            blocks.append(f"{field.label}:\n{items}")
        elif field.is_list:
            lines.append(f"{field.label}: none")
        elif "\n" in value.strip():
            close()
            blocks.append(f"{field.label}:\n{value.strip()}")
        else:
            lines.append(f"{field.label}: {_shown(field, value.strip())}")
    close()
    if text.strip():
        blocks.append(text.strip())
    return "\n\n".join(blocks)


def prepare(kind: str, data: Any, text: str, max_bytes: int) -> tuple[str, dict[str, Any] | None]:
    """``(body, data)`` to store for a send of ``kind``. A structured message is held to the
    hub's ``max_body_bytes`` as a whole: its text and its data together."""
    fields = check_fields(kind, data)
    if fields is None:
        return text, None
    body = body_of(kind, fields, text)
    size = len(body.encode(errors="surrogatepass")) + len(
        json.dumps(fields, ensure_ascii=False).encode(errors="surrogatepass"))
    if size > max_bytes:
        raise TooLarge(f"the {kind} message is {size} bytes (its text and its data); this hub "
                       f"accepts at most {max_bytes}")
    return body, fields
