"""What a person typing in a chat app means, for every chat connector alike.

A connector turns a platform update into a :class:`ChatEvent` (who, where, the text, which relayed
mesh message it replies to) and shows the :class:`ChatOutcome`'s Markdown reply; everything in
between (pairing, commands, targets, threads, linked groups, buttons) is here, so Telegram and
Slack behave the same.

In a private chat with the bot, for a paired person:

- plain text goes to their **current target**: the last peer or conversation they addressed
  (``#general`` at first);
- ``@name text``, ``/send name text`` or ``/to name text`` sends a DM and makes ``name`` the
  target; ``#conv text`` posts to a conversation and makes it the target;
- a platform reply to a relayed message replies in that message's thread;
- commands: ``/peers /inbox /conv [#name] /join #name /leave #name /status [status] /approvals
  /approve ID [reason] /deny ID [reason] /actions /call ACTION k=v... /help``, each served by
  the action of the same purpose.

Anyone not paired gets one short note on how to join; nothing they write is routed.

In a group chat, ``/link #conv`` (by a paired person) links the group to a conversation. From
then on what members write goes to the conversation (paired members as themselves, others
through the group's own peer with their name in front), and the conversation's messages are
posted in the group, except those that came from it (see :mod:`meshhub.bridge.loops`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshhub import codec
from meshhub.actions import ActionContext
from meshhub.errors import InvalidRequest, MeshError, NotFound
from meshhub.sanitize import for_terminal
from meshhub.views import presence_text

from .loops import is_echo, origin
from .pairing import PairingBook

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

BUTTON_PREFIX = "ap:"
VOTE_PREFIX = "pv:"  # a proposal's vote button: pv:<proposal id>:<approve|reject>
_COMMAND_WORD = re.compile(r"(?<![\w/:.<])/(?=[a-z]+\b)")  # "/peers" in a template, not a URL


def commands(template: str, prefix: str) -> str:
    """One of the bridge's own texts with its commands as the platform's people type them
    (``/peers`` is ``/hub peers`` on Slack). Never applied to what peers wrote."""
    return template if prefix == "/" else _COMMAND_WORD.sub(prefix, template)


@dataclass
class ChatEvent:
    connector: str
    user_id: str  # the platform's stable user id
    user_name: str  # their name on the platform (the display name when they pair)
    chat_id: str
    text: str = ""
    is_group: bool = False
    chat_title: str = ""
    reply_to: str | None = None  # the mesh message id the platform reply points at
    message_key: str | None = None  # unique per platform message (and edit): the idempotency key
    edited: bool = False
    attachments: list[dict[str, Any]] = field(default_factory=list)
    command_prefix: str = "/"  # how the platform's people type a command ("/hub " on Slack)


@dataclass
class ChatOutcome:
    reply: str | None = None  # Markdown to show in the chat, if anything
    sent: dict[str, Any] | None = None  # the mesh send's result when something was sent


HELP = """**meshhub** — you are `{name}`; plain text goes to **{target}**.
• `@name text` or `/send name text` — message a peer (and keep talking to them)
• `#conv text` — post to a conversation
• reply to a message — answer in its thread
• /peers — who is on the mesh
• /inbox — unread messages
• /conv — conversations; `/conv #name` — talk there
• /join #name, /leave #name — membership
• /status — you; `/status dnd` — set your status
• /approvals — approvals waiting for you; /approve ID [reason], /deny ID [reason]
• /actions — everything the hub can do; `/call ACTION key=value ...` runs one"""

GROUP_HELP = """**meshhub** in a group: `/link #conv` links this chat to a conversation (paired \
people only), `/unlink` undoes it. Linked, what is written here goes to the conversation and \
its messages appear here."""


def join_hint(connector: str) -> str:
    return (
        "This bot is a bridge to a meshhub. To join, ask the hub's owner for a code "
        f"(`hub pair {connector}`) and send it here as `/pair CODE`."
    )


def parse_command(text: str) -> tuple[str, str] | None:
    """``/cmd@bot args`` -> (``cmd``, ``args``); ``None`` when the text is not a command."""
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    if "\n" in head:
        head, _, more = head.partition("\n")
        rest = more + (" " + rest if rest else "")
    name = head.split("@", 1)[0].lower()
    return (name, rest.strip()) if name else None


def split_address(text: str) -> tuple[str, str] | None:
    """``@name rest`` / ``#conv rest`` at the start of a text -> (target, rest)."""
    if text[:1] not in ("@", "#"):
        return None
    head, _, rest = text.partition(" ")
    if len(head) < 2:
        return None
    target = head[1:] if head.startswith("@") else head
    return target.rstrip(":,"), rest.strip()


# -- rendering results ----------------------------------------------------------------------------
def _peer_line(p: dict[str, Any]) -> str:
    summary = f" — {p['summary']}" if p.get("summary") else ""
    you = " (you)" if p.get("you") else ""
    where = "" if p["reach"] == "connector" else f" on {p['connector']}"  # "via telegram" says it
    return f"• `{p['name']}`{you} {p['kind']}{where}, {presence_text(p)}{summary}"


def _message_line(m: dict[str, Any]) -> str:
    where = "" if m["conversation"] == "dm" else f" in {m['conversation']}"
    text = m["text"] if len(m["text"]) <= 300 else m["text"][:300] + "…"
    return f"• `{m['from']}`{where}: {text}"


def render(value: Any) -> str:
    """A generic action result as Markdown (a JSON block), for ``/call``."""
    return "```\n" + json.dumps(value, indent=2, default=str)[:3500] + "\n```"


def describe(hub: Hub, message: Message) -> str:
    """The one-line header a chat shows above a relayed message: who, where, what kind."""
    peers = hub.directory.peers
    sender = peers[message.sender].name if message.sender in peers else message.sender
    where = "" if message.conversation in ("dm", "multi") else f" in {message.conversation}"
    if message.kind == "approval":
        data = message.data if isinstance(message.data, dict) else {}
        if data.get("kind") == "permission":
            return f"{sender} asks to run {data.get('tool') or 'a tool'}"
        if data.get("kind") == "question":
            return f"{sender} asks you"
        return f"{sender} asks for your approval"
    if message.kind == "approval_answer":
        return f"{sender} answered your approval request"
    if message.kind == "proposal":
        return f"{sender} asks for your vote{where}"
    thread = " (in a thread)" if message.reply_to else ""
    return f"{sender}{where}{thread}"


async def settled_label(hub: Hub, message: Message) -> str | None:
    """How the request an approval card shows was settled (its ``label``), or ``None`` while
    it is pending or ``message`` is no card: a card posted after its request was settled (the
    chat was offline) goes out with the label and without buttons. A proposal's card is one
    too: it shows the result once the proposal is resolved."""
    if message.kind == "proposal":
        from meshhub.builtins.proposal_book import ProposalBook

        return await ProposalBook.of(hub).settled_label(message)
    if message.kind != "approval" or not isinstance(message.data, dict):
        return None
    from meshhub.builtins.approval_book import ApprovalBook

    book = ApprovalBook.of(hub)
    row = await book.row(str(message.data.get("approval_id", "")))
    return None if row is None or row["state"] == "pending" else str(book.view(row)["label"])


def buttons(message: Message) -> list[tuple[str, str]]:
    """(label, token) pairs to show as buttons under ``message``; tokens fit in 64 bytes."""
    if message.kind == "proposal" and isinstance(message.data, dict):
        proposal_id = str(message.data.get("proposal_id", ""))
        return [("Approve", f"{VOTE_PREFIX}{proposal_id}:approve"),
                ("Reject", f"{VOTE_PREFIX}{proposal_id}:reject")]
    if message.kind != "approval" or not isinstance(message.data, dict):
        return []
    approval_id = str(message.data.get("approval_id", ""))
    options = message.data.get("options") or []
    return [(for_terminal(str(opt), one_line=True).capitalize(),
             f"{BUTTON_PREFIX}{approval_id}:{i}")
            for i, opt in enumerate(options)]


# -- handling -------------------------------------------------------------------------------------
class ChatHandler:
    """Interprets :class:`ChatEvent` s for one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @property
    def book(self) -> PairingBook:
        return PairingBook.of(self.hub)

    def ctx(self, peer: Peer, surface: str) -> ActionContext:
        return ActionContext(hub=self.hub, peer=peer, surface=surface)

    async def call(self, peer: Peer, surface: str, action_name: str, /, **params: Any) -> Any:
        return await self.hub.actions.call(self.ctx(peer, surface), action_name, params)

    def paired_peer(self, connector: str, user_id: str) -> Peer | None:
        return self.book.peer_for(f"{connector}:{user_id}")

    async def handle(self, event: ChatEvent) -> ChatOutcome:
        try:
            outcome = await (self._group(event) if event.is_group else self._private(event))
        except MeshError as exc:
            outcome = ChatOutcome(reply=f"⚠️ {exc.message}")
        return outcome

    async def _private(self, event: ChatEvent) -> ChatOutcome:
        p = event.command_prefix
        if event.edited and event.text.lstrip().startswith("/"):
            return ChatOutcome()  # an edited command is not run again, nor relayed as text
        command = parse_command(event.text) if not event.edited else None
        peer = self.paired_peer(event.connector, event.user_id)
        if command and command[0] == "pair":
            if not command[1]:
                return ChatOutcome(reply=commands("Send the code with the command: `/pair CODE`.",
                                                  p))
            peer = await self.book.redeem(event.connector, event.user_id, command[1],
                                          event.user_name)
            member = self.hub.directory.member(peer.member_key)
            who = (f"linked to **{member.name}**: this chat is one more way to reach you, "
                   f"as `{peer.name}`" if member is not None
                   else f"you are `{peer.name}` on the mesh")
            return ChatOutcome(reply=(
                f"Paired: {who}. Plain text goes to **{self.book.target(peer)}**; "
                + commands("/help shows the rest.", p)))
        if peer is None:
            return ChatOutcome(reply=commands(join_hint(event.connector), p))
        if command:
            return await self._command(peer, event, *command)
        return await self._send_text(peer, event, event.text)

    async def _send_text(self, peer: Peer, event: ChatEvent, text: str) -> ChatOutcome:
        body = f"(edited) {text}" if event.edited else text
        if event.reply_to is not None:
            question = await self._open_question(event.reply_to)
            if question is not None and not event.edited:
                await self.call(peer, event.connector, "approval_answer", id=question,
                                answer=text)
                return ChatOutcome(reply="Answered.")
            return ChatOutcome(sent=await self._send(peer, event, None, body, event.reply_to))
        address = split_address(text) if not event.edited else None
        if address is not None:
            target, rest = address
            await self._check_target(peer, target)
            await self.book.set_target(peer, target)
            if not rest and not event.attachments:
                return ChatOutcome(reply=f"Now talking to **{target}**.")
            return ChatOutcome(sent=await self._send(peer, event, target, rest))
        return ChatOutcome(sent=await self._send(peer, event, self.book.target(peer), body))

    async def _open_question(self, message_id: str) -> str | None:
        """The approval id when ``message_id`` is a request whose answer is free text (a
        question without options): a reply to its card is the answer, not a thread reply."""
        card = await self.hub.store.get_message(message_id)
        if card is None or card.kind != "approval" or not isinstance(card.data, dict):
            return None
        if card.data.get("kind") != "question" or card.data.get("options"):
            return None
        return str(card.data.get("approval_id") or "") or None

    async def _check_target(self, peer: Peer, target: str) -> None:
        if target.startswith("#"):
            self.hub.directory.conversation(target)
        elif self.hub.directory.find(target) is None:
            close = ", ".join(self.hub.directory.closest_names(target))
            raise NotFound(f"no peer named {target!r}; closest known: {close or 'none'}")

    async def _send(self, peer: Peer, event: ChatEvent, to: str | None, body: str,
                    reply_to: str | None = None, *, data: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        if reply_to is not None:
            root = await self.hub.store.get_message(reply_to)
            if root is not None and root.reply_to is not None:
                reply_to = root.reply_to  # threads are flat: answer the root
        client_id = f"{event.connector}:{event.message_key}" if event.message_key else None
        return await self.hub.send(
            peer, to, body, reply_to=reply_to, client_id=client_id, data=data,
            attachments=event.attachments or None,
        )

    async def _command(self, peer: Peer, event: ChatEvent, name: str, args: str) -> ChatOutcome:
        p = event.command_prefix
        surface = event.connector
        book = self.book
        if name in ("help", "start"):
            return ChatOutcome(reply=commands(HELP, p).format(name=peer.name,
                                                              target=book.target(peer)))
        if name in ("to", "send"):
            target, _, rest = args.partition(" ")
            if not target:
                return ChatOutcome(reply=commands(f"Say who: `/{name} name text`.", p))
            return await self._send_text(peer, event, f"@{target.lstrip('@')} {rest}".strip()
                                         if not target.startswith("#") else f"{target} {rest}")
        if name == "peers":
            listed = await self.call(peer, surface, "peers")
            return ChatOutcome(reply="**Peers**\n" + "\n".join(_peer_line(p) for p in listed))
        if name == "inbox":
            result = await self.call(peer, surface, "inbox", limit=20)
            if not result["messages"]:
                return ChatOutcome(reply="No unread messages.")
            more = commands("\n… more: /inbox again", p) if result["more"] else ""
            return ChatOutcome(reply="**Unread**\n" + "\n".join(
                _message_line(m) for m in result["messages"]) + more)
        if name == "conv":
            if args:
                conv = self.hub.directory.conversation(args)
                await self.call(peer, surface, "conversation_join", name=conv.name)
                await book.set_target(peer, "#" + conv.name)
                return ChatOutcome(reply=f"Now talking in **#{conv.name}**.")
            convs = await self.call(peer, surface, "conversations")
            lines = [f"• #{c['name'].lstrip('#')}{' (joined)' if c['joined'] else ''}"
                     f"{' — ' + c['topic'] if c['topic'] else ''}" for c in convs]
            return ChatOutcome(reply=f"**Conversations** (you talk to {book.target(peer)})\n"
                               + "\n".join(lines))
        if name in ("join", "leave"):
            if not args:
                return ChatOutcome(reply=commands(f"Say which: `/{name} #name`.", p))
            action = "conversation_join" if name == "join" else "conversation_leave"
            conv = await self.call(peer, surface, action, name=args)
            if name == "join":
                await book.set_target(peer, conv["name"])
                return ChatOutcome(reply=f"Joined **{conv['name']}**; you now talk there.")
            if book.target(peer) == conv["name"]:
                await book.set_target(peer, "#general")
            return ChatOutcome(reply=f"Left **{conv['name']}**.")
        if name == "status":
            me = (await self.call(peer, surface, "set_status", status=args) if args
                  else await self.call(peer, surface, "whoami"))
            groups = ", ".join("@" + g for g in me["groups"]) or "none"
            return ChatOutcome(reply=(
                f"You are `{me['name']}` ({me['key']}), status **{me['status']}**, groups "
                f"{groups}; plain text goes to **{book.target(peer)}**."))
        if name == "approvals":
            items = await self.call(peer, surface, "approvals", role="approver")
            if not items:
                return ChatOutcome(reply="No approvals are waiting for you.")
            return ChatOutcome(reply="**Waiting for you**\n" + "\n".join(
                f"• `{a.get('ref') or a['id']}` from `{a['asker']}`: {a['question']}"
                for a in items))
        if name in ("approve", "deny"):
            approval_id, _, reason = args.partition(" ")
            if not approval_id:
                return ChatOutcome(reply=commands(f"Say which: `/{name} ID [reason]`.", p))
            answer = await self._option_for(peer, surface, approval_id, name)
            result = await self.call(peer, surface, "approval_answer", id=approval_id,
                                     answer=answer, reason=reason or None)
            return ChatOutcome(reply=f"Answered **{result['answer']}**.")
        if name == "actions":
            return ChatOutcome(reply=commands("**Actions** (run with `/call NAME key=value`)\n",
                                              p) + "\n".join(
                f"• `{a['name']}` — {a['summary']}" for a in self.hub.actions.describe()))
        if name == "call":
            action_name, params = parse_call(args)
            return ChatOutcome(reply=render(await self.call(peer, surface, action_name,
                                                            **params)))
        if name in ("link", "unlink"):
            return ChatOutcome(reply="Use this command in the group chat you want to link.")
        return ChatOutcome(reply=commands(f"Unknown command /{name}; /help lists them.", p))

    async def _option_for(self, peer: Peer, surface: str, approval_id: str, word: str) -> str:
        """What ``/approve`` or ``/deny`` answers to the request ``approval_id`` (its id or its
        ``ref``, any case): the option of that name, or for a yes-or-no request of two options
        (a tool permission's allow/deny) the first (approve) or the second (deny). Anything
        else gets the word itself, and ``approval_answer`` says what to answer instead (or why
        they may not)."""
        try:
            options = (await self.call(peer, surface, "approval_get", id=approval_id))["options"]
        except MeshError:
            return word
        if len(options) != 2 or any(o.lower() == word for o in options):
            return word
        return str(options[0] if word == "approve" else options[1])

    async def _group(self, event: ChatEvent) -> ChatOutcome:
        p = event.command_prefix
        if event.edited and event.text.lstrip().startswith("/"):
            return ChatOutcome()  # an edited command is not run again, nor relayed as text
        command = parse_command(event.text) if not event.edited else None
        peer = self.paired_peer(event.connector, event.user_id)
        chat_identity = f"{event.connector}:chat:{event.chat_id}"
        link = self.book.link_for(chat_identity)
        if command is not None:
            name, args = command
            if name == "help":
                return ChatOutcome(reply=commands(GROUP_HELP, p))
            if name in ("link", "unlink"):
                if peer is None:
                    return ChatOutcome(reply=commands(join_hint(event.connector)
                                                      + " Then /link this chat again.", p))
                if name == "unlink":
                    old = await self.book.unlink(chat_identity)
                    return ChatOutcome(reply=f"Unlinked from #{old.conversation}.")
                if not args:
                    return ChatOutcome(reply=commands("Say which conversation: `/link #name`.",
                                                      p))
                made = await self.book.link(event.connector, event.chat_id,
                                            event.chat_title or "group", args, peer)
                return ChatOutcome(reply=f"Linked to **#{made.conversation}**: messages go "
                                   "both ways from now on.")
            return ChatOutcome()  # other commands are for private chats
        if link is None:
            return ChatOutcome()  # an unlinked group: stay quiet
        data = origin(event.connector, event.chat_id)
        body = f"(edited) {event.text}" if event.edited else event.text
        group_peer = self.hub.directory.peers.get(link.peer)
        if group_peer is None:
            return ChatOutcome()
        sender, text = peer, body
        reply_to = event.reply_to
        if peer is not None and reply_to is not None:
            root = await self.hub.store.get_message(reply_to)
            visible = root is not None and (root.sender == peer.key
                                            or peer.key in root.recipients)
            if not visible:
                sender = None  # not in that thread: the group's peer answers in it for them
        if sender is None:
            sender, text = group_peer, f"**{event.user_name}**: {body}"
        to = None if reply_to is not None else "#" + link.conversation
        return ChatOutcome(sent=await self._send(sender, event, to, text, reply_to, data=data))

    async def press(self, connector: str, user_id: str, token: str,
                    card: Message | None = None) -> tuple[str, bool]:
        """A button under ``card`` (the request message, when the connector knows it) was
        pressed: (short text to flash to the presser, whether this press answered it).

        The press only answers (or votes, under a proposal); every card of the request, this
        one included, is updated through ``meshhub_card_settled``, whichever surface
        settled it (a proposal's cards when it is resolved)."""
        peer = self.paired_peer(connector, user_id)
        if peer is None:
            return "You are not paired with this hub.", False
        if token.startswith(VOTE_PREFIX):
            return await self._vote(peer, connector, token)
        if not token.startswith(BUTTON_PREFIX):
            return "This button is no longer supported.", False
        approval_id, _, index = token[len(BUTTON_PREFIX):].rpartition(":")
        try:
            answer = await self._pressed_option(peer, connector, approval_id, int(index), card)
            result = await self.call(peer, connector, "approval_answer", id=approval_id,
                                     answer=answer)
        except MeshError as exc:
            return self._refusal(exc), False
        except (ValueError, IndexError):
            return "That button is broken.", False
        return f"Answered: {for_terminal(str(result['answer']), one_line=True)}", True

    async def _vote(self, peer: Peer, connector: str, token: str) -> tuple[str, bool]:
        """A proposal's Approve or Reject button: the presser's vote, as ``vote`` casts it.
        It counts as answering the card only when the vote resolved the proposal (then the
        cards are edited); a vote that leaves it open is flashed to the presser."""
        proposal_id, _, choice = token[len(VOTE_PREFIX):].rpartition(":")
        try:
            result = await self.call(peer, connector, "vote", id=proposal_id, vote=choice)
        except MeshError as exc:
            return self._refusal(exc), False
        changed = f" (was {result['changed_from']})" if result["changed_from"] else ""
        return (f"Voted {choice}{changed}; the proposal is {result['state']}",
                result["state"] != "open")

    async def _pressed_option(self, peer: Peer, connector: str, approval_id: str, index: int,
                              card: Message | None) -> str:
        """The option button ``index`` stands for: from the card it is under, else (a card the
        connector lost track of) from the approval itself."""
        data = card.data if card is not None and isinstance(card.data, dict) else {}
        if data.get("approval_id") == approval_id:
            options = data.get("options") or []
        else:
            options = (await self.call(peer, connector, "approval_get", id=approval_id))["options"]
        return str(options[index])

    @staticmethod
    def _refusal(exc: MeshError) -> str:
        """What a refused press flashes: the refusal's own words, which for a settled request
        say how it was settled (``Already answered: allow, answered by ann on web``)."""
        text = exc.message
        if exc.code == "exists":  # "already answered: <label>", the start of a flash
            text = text[:1].upper() + text[1:]
        return for_terminal(text, one_line=True)


async def may_post(hub: Hub, peer: Peer, message: Message, *, connector: str, chat: str,
                   platform: str, place: str = "chat") -> bool | None:
    """What a bridge does with ``message`` for ``peer`` before posting it to ``chat``: ``None``
    to post it; ``True`` to ack it unposted (it came from that linked chat, which shows it);
    ``False`` once the delivery is given up (the chat was unlinked, the pairing revoked)."""
    book = PairingBook.of(hub)
    if peer.identity.startswith(f"{connector}:chat:"):
        if book.link_for(peer.identity) is None:
            await give_up(hub, peer, message, f"the {platform} {place} is no longer linked")
            return False
        if is_echo(message, connector, chat):
            return True
    elif not book.is_paired(peer):
        await give_up(hub, peer, message, f"the {platform} pairing was revoked")
        return False
    return None


async def give_up(hub: Hub, peer: Peer, message: Message, reason: str) -> None:
    """Mark a delivery ``dead`` with ``reason`` (a refusal that retrying cannot fix); the sender
    sees it in ``message_status``."""
    from meshhub.store import StateChange

    await hub.store.change_states([StateChange(message.id, peer.key, "dead", reason=reason)])


def parse_call(args: str) -> tuple[str, dict[str, Any]]:
    """``ACTION k=v k2="a b"`` -> (action, params); values are JSON when they parse as JSON
    the hub can keep (:func:`meshhub.codec.read`), else the text as written."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InvalidRequest(f"cannot read the parameters: {exc}") from None
    if not words:
        raise InvalidRequest("say which action: `/call ACTION key=value ...` (see /actions)")
    params: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidRequest(f"parameters are key=value, got {word!r}")
        try:
            params[key] = codec.read(value)
        except codec.JSONDecodeError:
            params[key] = value
    return words[0], params
