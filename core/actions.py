"""Actions: every operation defined once and served on every surface.

An action is an async function ``handler(ctx, **params)`` with typed keyword parameters and a
docstring. The registry turns its signature into a pydantic model, which validates input the same
way on every surface and yields the JSON schema that the OpenAPI document, the MCP tool list and
the CLI are generated from. Parameter help comes from ``Annotated[T, "help text"]``; other
metadata in the annotation stays with the type, so ``Annotated[str, "help",
Field(max_length=...)]`` is checked on every surface and shows in the schema (``maxLength``).
"""

from __future__ import annotations

import inspect
import logging
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import Forbidden, InvalidRequest, MeshError, NotFound, error_frame
from .fields import TooLong
from .store import CAPS

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Peer

Handler = Callable[..., Awaitable[Any]]


@dataclass
class ActionContext:
    """Who is calling, from which surface; handed to every action handler as ``ctx``."""

    hub: Hub
    peer: Peer
    surface: str  # ws | http | mcp | cli | telegram | slack | email | web
    connection: Any = None
    cap: str = "admin"  # the most this call may do: a token's cap; a member's key holds all
    token: str | None = None  # the hash of the bearer token the call came with, if any

    @property
    def is_admin(self) -> bool:
        """The owner's powers: the owner's peer, not limited by a token's cap."""
        return self.cap == "admin" and self.hub.is_admin(self.peer)


@dataclass
class Action:
    name: str
    handler: Handler
    description: str
    params: type[BaseModel]
    admin: bool = False
    read_only: bool = False
    cap: str = "send"  # the token capability it needs: read, send or admin
    plugin: str = ""
    tags: list[str] = field(default_factory=list)
    # it may wait a long time (``ask``, ``approval_wait``): a WebSocket serves it beside the
    # connection's other frames instead of in their order
    concurrent: bool = False

    @property
    def summary(self) -> str:
        """The first sentence of the description, whole (it may span lines)."""
        return first_sentence(self.description)

    def input_schema(self) -> dict[str, Any]:
        schema = self.params.model_json_schema()
        schema.pop("title", None)
        return schema

    def validate(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` against the signature; a user error names each bad field."""
        try:
            model = self.params.model_validate(params or {})
        except ValidationError as exc:
            raise _refusal(self.name, exc) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "description": self.description,
            "input_schema": self.input_schema(),
            "admin": self.admin,
            "read_only": self.read_only,
            "cap": self.cap,
            "plugin": self.plugin,
            "concurrent": self.concurrent,
        }


_LENGTH_ERRORS = frozenset({"string_too_long", "too_long"})


def _where(loc: tuple[int | str, ...]) -> str:
    """A bad value's place, ``groups.backend``: each part cut short, since a part may be a
    key the caller chose (of any length)."""
    return ".".join(str(part)[:40] for part in loc if part != "[key]") or "params"


def _refusal(action_name: str, exc: ValidationError) -> InvalidRequest:
    """What bad parameters are told: a field over its maximum as :class:`TooLong` (field and
    limit named), anything else as ``invalid_request`` naming each bad field."""
    for err in exc.errors():
        if err["type"] in _LENGTH_ERRORS:
            text = err["type"] == "string_too_long"
            field = _where(err["loc"]) + (" (a name in it)" if err["loc"][-1:] == ("[key]",)
                                          else "")
            return TooLong(field, int(err["ctx"]["max_length"]),
                           "characters" if text else "items")
    problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors())
    return InvalidRequest(f"bad parameters for {action_name}: {problems}")


# a full stop that ends a sentence: followed by a space or the end, and not that of "e.g."
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bcf)(?<!\bvs)[.!?](?=\s|$)")


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, its lines joined."""
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph[:end.end()] if end else paragraph


def _params_model(name: str, fn: Handler) -> type[BaseModel]:
    # the ctx annotation may name types imported only under TYPE_CHECKING
    namespace = {"ActionContext": ActionContext, **fn.__globals__}
    hints = typing.get_type_hints(fn, globalns=namespace, include_extras=True)
    fields: dict[str, Any] = {}
    for index, (pname, param) in enumerate(inspect.signature(fn).parameters.items()):
        if index == 0:
            continue  # ctx
        annotation = hints.get(pname, Any)
        help_text = None
        if typing.get_origin(annotation) is typing.Annotated:
            base, *extras = typing.get_args(annotation)
            help_text = next((e for e in extras if isinstance(e, str)), None)
            checks = tuple(e for e in extras if not isinstance(e, str))
            annotation = typing.Annotated[(base, *checks)] if checks else base
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, Field(default, description=help_text))
    model_name = "".join(part.capitalize() for part in name.split("_")) + "Params"
    model: type[BaseModel] = create_model(
        model_name, __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def action(
    name: str | None = None, *, admin: bool = False, read_only: bool = False,
    cap: str | None = None, concurrent: bool = False,
) -> Callable[[Handler], Action]:
    """Turn ``async def handler(ctx, ...)`` into an :class:`Action`.

    ``cap`` is the bearer-token capability the action needs; by default ``admin`` for admin
    actions, ``read`` for read-only ones and ``send`` for the rest. ``concurrent``: the action
    may wait (for a person's answer), so it must not hold up the caller's other calls.
    """
    if cap is not None and cap not in CAPS:
        raise ValueError(f"cap must be one of {', '.join(CAPS)}, not {cap!r}")

    def wrap(fn: Handler) -> Action:
        action_name = name or fn.__name__
        return Action(
            name=action_name,
            handler=fn,
            description=inspect.getdoc(fn) or action_name,
            params=_params_model(action_name, fn),
            admin=admin,
            read_only=read_only,
            cap=cap or ("admin" if admin else "read" if read_only else "send"),
            concurrent=concurrent,
        )

    return wrap


def check_allowed(ctx: ActionContext, item: Action) -> None:
    """Refuse an action its caller may not run: owner-only actions, and anything beyond the
    capability of the token it came with."""
    if item.admin and not ctx.is_admin:
        raise Forbidden(f"{item.name} is for the hub's owner only")
    if CAPS.index(ctx.cap) < CAPS.index(item.cap):
        raise Forbidden(f"{item.name} needs a token with cap {item.cap!r}; this one has "
                        f"{ctx.cap!r}")


class ActionRegistry:
    def __init__(self) -> None:
        self.actions: dict[str, Action] = {}

    def add(self, item: Action, *, plugin: str = "") -> str:
        if not isinstance(item, Action):
            raise TypeError(f"register() takes an Action, got {type(item).__name__}")
        if item.name in self.actions:
            raise ValueError(
                f"action {item.name!r} is already registered by {self.actions[item.name].plugin}"
            )
        item.plugin = plugin
        self.actions[item.name] = item
        return item.name

    def get(self, name: str) -> Action:
        try:
            return self.actions[name]
        except KeyError:
            raise NotFound(
                f"unknown action {name!r}; known actions: {', '.join(sorted(self.actions))}",
                code="unknown_action",
            ) from None

    async def call(self, ctx: ActionContext, name: str, params: dict[str, Any] | None, *,
                   counted: bool = True) -> Any:
        """Run an action as ``ctx.peer``. ``counted=False``: the hub's own bookkeeping on a
        peer's behalf (an unread count it pushes), which does not spend the peer's rate."""
        if counted and name != "send":  # a send is counted by its own rate, in prepare_send
            ctx.hub.limits.check_action(ctx.peer)
        item = self.get(name)
        check_allowed(ctx, item)
        return await item.handler(ctx, **item.validate(params))

    async def answer_frame(self, ctx: ActionContext, name: str, params: dict[str, Any] | None,
                           call_id: Any) -> dict[str, Any]:
        """The WebSocket answer (``result`` or ``error`` frame) of a call served beside the
        connection's other frames (a ``concurrent`` action)."""
        try:
            return {"type": "result", "id": call_id, "result": await self.call(ctx, name, params)}
        except MeshError as exc:
            return error_frame(exc, call_id)
        except Exception:
            log.exception("%s call from %s failed", name, ctx.peer.name)
            return error_frame(MeshError("the hub failed on this call; it was not applied",
                                         code="internal"), call_id)

    def describe(self) -> list[dict[str, Any]]:
        return [a.describe() for a in sorted(self.actions.values(), key=lambda a: a.name)]
