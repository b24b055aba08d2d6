// One message as the page shows it, in the conversation and in the thread panel. The body is
// the hub's rendered, sanitized HTML; every other field goes in as text.

import { byteSize, el, fill, longTime, shortTime } from "./dom.js";

const COMMON_EMOJI = ["👍", "❤️", "😄", "🎉", "👀", "✅", "❌", "🙏"];

const KIND_LABELS = {
  approval: "approval request", approval_answer: "approval answer",
};

/**
 * The element of one message. `page` gives what the buttons need: `me` (my peer),
 * `openView(view)`, `openThread(id)`, `react(id, emoji, remove)`, `download(attachment)`, and the known
 * `reactions` and `replies` of messages by id.
 */
export function messageNode(message, html, page, { inThread = false } = {}) {
  const mine = message.from === page.me.name;
  const mentioned = !mine && message.mentions.includes(page.me.name);
  const node = el("article", {
    class: ["message", mine && "mine", mentioned && "mentioned", message.whisper.length && "whisper"]
      .filter(Boolean).join(" "),
    "data-testid": "message", "data-id": message.id, "data-from": message.from,
  },
  el("div", { class: "avatar", "aria-hidden": "true" }, initial(message.from)),
  el("div", { class: "message-main" },
    header(message),
    body(message, html),
    attachments(message, page),
    approvalLink(message, page),
    el("footer", { class: "message-meta" },
      el("div", { class: "reactions", "data-testid": "reactions" }),
      !inThread && !message.reply_to ? el("button", {
        class: "thread-link", type: "button", "data-testid": "thread-link", hidden: true,
        onclick: () => page.openThread(message.id),
      }) : null,
      mine ? el("button", {
        type: "button", class: "receipt", "data-testid": "receipt", "aria-expanded": "false",
        onclick: (event) => toggleReceiptDetails(event.currentTarget),
      }) : null),
    actions(message, page, inThread)));
  paintReactions(node, message.id, page);
  if (!inThread) paintReplies(node, page.replies.get(message.id) ?? 0);
  return node;
}

function initial(name) {
  return (name || "?").slice(0, 1).toUpperCase();
}

function header(message) {
  const when = el("time", {
    datetime: new Date(message.created_at * 1000).toISOString(), title: longTime(message.created_at),
  }, shortTime(message.created_at));
  return el("header", { class: "message-header" },
    el("span", { class: "sender", "data-testid": "message-sender" }, message.from),
    KIND_LABELS[message.kind] ? el("span", { class: "tag" }, KIND_LABELS[message.kind]) : null,
    message.whisper.length
      ? el("span", { class: "tag whisper-tag", "data-testid": "whisper-tag" },
        `whisper to ${message.whisper.join(", ")}`)
      : null,
    message.priority === "now" ? el("span", { class: "tag urgent" }, "urgent") : null,
    when);
}

function body(message, html) {
  const node = el("div", { class: "body", "data-testid": "message-body" });
  if (typeof html === "string") {
    node.innerHTML = html; // the hub renders and sanitizes bodies; this is the page's only innerHTML
  } else {
    node.append(el("p", { class: "plain" }, message.text));
  }
  return node;
}

function attachments(message, page) {
  if (!message.attachments.length) return null;
  return el("ul", { class: "attachments" }, message.attachments.map((file) => el("li", {},
    el("button", {
      type: "button", class: "attachment", "data-testid": "attachment",
      onclick: () => page.download(file),
    }, `📎 ${file.name}`, el("span", { class: "muted" }, ` ${byteSize(file.size ?? 0)}`)))));
}

/** An approval request to me: one click to the panel where it is answered. */
function approvalLink(message, page) {
  if (message.kind !== "approval" || message.from === page.me.name) return null;
  return el("button", {
    type: "button", class: "approval-link", "data-testid": "approval-link",
    onclick: () => page.openView("panel:approvals"),
  }, "Answer in Approvals");
}

function actions(message, page, inThread) {
  const bar = el("div", { class: "message-actions" },
    el("button", {
      type: "button", class: "icon-button", "data-testid": "react-button",
      "aria-label": "Add a reaction", title: "Add a reaction",
      onclick: (event) => togglePicker(event.currentTarget.closest(".message"), message, page),
    }, "☺+"),
    !inThread && !message.reply_to ? el("button", {
      type: "button", class: "icon-button", "data-testid": "reply-button",
      "aria-label": "Reply in thread", title: "Reply in thread",
      onclick: () => page.openThread(message.id),
    }, "↩ Reply") : null);
  return bar;
}

function togglePicker(node, message, page) {
  const open = node.querySelector(".emoji-picker");
  if (open) {
    open.remove();
    return;
  }
  const picker = el("div", { class: "emoji-picker", "data-testid": "emoji-picker", role: "menu" },
    COMMON_EMOJI.map((emoji) => el("button", {
      type: "button", role: "menuitem", "data-testid": "emoji-option", "data-emoji": emoji,
      "aria-label": `React with ${emoji}`,
      onclick: () => {
        picker.remove();
        page.react(message.id, emoji, false);
      },
    }, emoji)));
  node.querySelector(".message-main").append(picker);
  picker.querySelector("button").focus();
}

/** Show the reactions the page knows for this message (`page.reactions`: id -> {emoji: [names]}). */
export function paintReactions(node, id, page) {
  const box = node.querySelector(".reactions");
  const known = page.reactions.get(id) ?? {};
  fill(box, Object.entries(known).filter(([, names]) => names.length).map(([emoji, names]) => {
    const mine = names.includes(page.me.name);
    return el("button", {
      type: "button", class: mine ? "reaction mine" : "reaction", "data-testid": "reaction",
      "data-emoji": emoji, title: names.join(", "), "aria-pressed": mine ? "true" : "false",
      onclick: () => page.react(id, emoji, mine),
    }, emoji, el("span", { class: "count" }, String(names.length)));
  }));
}

/** Show how many replies a thread root has. */
export function paintReplies(node, count) {
  const link = node.querySelector(".thread-link");
  if (!link) return;
  link.hidden = count === 0;
  link.textContent = count === 1 ? "1 reply" : `${count} replies`;
}

const STATE_ORDER = ["queued", "pushed", "delivered", "read"];

/** Summarise message_status for one of my messages: read > delivered > sent; dead is named. */
export function paintReceipt(node, status) {
  const receipt = node.querySelector(".receipt");
  if (!receipt) return;
  const people = status.recipients;
  const dead = people.filter((r) => r.state === "dead");
  const read = people.filter((r) => r.state === "read");
  const delivered = people.filter((r) => STATE_ORDER.indexOf(r.state) >= 2);
  let state = "sent";
  let text = "Sent";
  if (dead.length) {
    state = "dead";
    text = `Not delivered to ${dead.map((r) => r.name).join(", ")}`;
  } else if (people.length && read.length === people.length) {
    state = "read";
    text = people.length === 1 ? "Read" : `Read by all ${people.length}`;
  } else if (read.length) {
    state = "read-some";
    text = `Read by ${read.length} of ${people.length}`;
  } else if (people.length && delivered.length === people.length) {
    state = "delivered";
    text = "Delivered";
  }
  receipt.dataset.state = state;
  receipt.textContent = text;
  receipt.title = "Who has it";
  const details = node.querySelector(".receipt-details")
    ?? el("ul", { class: "receipt-details", "data-testid": "receipt-details", hidden: true });
  fill(details, people.map((r) => el("li", { "data-state": r.state },
    el("span", {}, r.name), el("span", { class: "muted" }, r.reason ? `${r.state}: ${r.reason}` : r.state))));
  if (!details.isConnected) node.querySelector(".message-main").append(details);
}

function toggleReceiptDetails(receipt) {
  const details = receipt.closest(".message").querySelector(".receipt-details");
  if (!details) return;
  details.hidden = !details.hidden;
  receipt.setAttribute("aria-expanded", String(!details.hidden));
}
