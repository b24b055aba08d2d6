// Search the messages you sent or received (the `search` action): words, optionally only in one
// conversation, from one sender or since a time; hits best first. A hit's snippet is a peer's
// text with the matched words between `[` and `]` (a bracket or backslash the sender wrote
// comes escaped): it is read here character by character into text nodes and <mark> elements.
// Clicking a hit opens its message in its thread.

export const title = "Search";

const LIMIT = 50;

/** The snippet as text and <mark> nodes: `[`..`]` marks, a backslash takes the next as text. */
export function snippetNodes(snippet, el) {
  const nodes = [];
  let text = "";
  let marked = null;
  const flush = () => {
    if (!text) return;
    if (marked) marked.push(text);
    else nodes.push(text);
    text = "";
  };
  for (let at = 0; at < snippet.length; at += 1) {
    const char = snippet[at];
    if (char === "\\" && at + 1 < snippet.length) {
      at += 1;
      text += snippet[at];
    } else if (char === "[" && !marked) {
      flush();
      marked = [];
    } else if (char === "]" && marked) {
      flush();
      nodes.push(el("mark", {}, marked));
      marked = null;
    } else {
      text += char;
    }
  }
  flush();
  if (marked) nodes.push(...marked);  // an unclosed mark: its words as plain text
  return nodes;
}

/** Where a message was said, as a person reads it. */
function whereOf(message, me) {
  let where = message.conversation;
  if (where === "dm") where = message.from === me.name ? "direct message (sent)" : "direct message";
  else if (where === "multi") where = "to several";
  if (message.reply_to) where += " · in a thread";
  return message.whisper.length ? `${where} · whisper to ${message.whisper.join(", ")}` : where;
}

export async function mount(element, api) {
  const { el } = api;
  const field = (name, placeholder, label) => el("input", {
    type: "text", placeholder, "aria-label": label, "data-testid": `search-${name}`,
  });
  const query = field("query", "words to find (all of them)", "Search");
  const conversation = field("conversation", "in: #name, @group or dm:name", "Only in");
  const sender = field("sender", "from: a name", "Only from");
  const since = field("since", "since: 2h, 3d or 2026-12-05", "Only since");
  const form = el("form", { class: "search-form", "data-testid": "search-form" },
    query,
    el("div", { class: "search-filters" }, conversation, sender, since),
    el("div", { class: "button-row" }, el("button", { type: "submit", class: "primary" },
      "Search")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  const note = el("p", { class: "muted", "data-testid": "search-note", hidden: true });
  const list = el("ul", { class: "card-list", "data-testid": "search-hits" });
  element.replaceChildren(el("h2", {}, "Search messages"), form, note, list);

  function hitCard({ message, snippet }) {
    const when = new Date(message.created_at * 1000).toLocaleString();
    return el("li", { class: "card search-hit", "data-testid": "search-hit", "data-id": message.id },
      el("button", {
        type: "button", class: "search-open", "data-testid": "search-open",
        title: "Open in its thread", onclick: () => api.openMessage(message),
      },
      el("span", { class: "card-title" },
        el("span", { "data-testid": "search-from" }, message.from),
        el("span", { class: "muted", "data-testid": "search-where" }, whereOf(message, api.me)),
        el("span", { class: "muted" }, when)),
      el("p", { class: "search-snippet", "data-testid": "search-snippet" },
        snippetNodes(snippet, el))));
  }

  function params() {
    const optional = (input) => input.value.trim() || null;
    return {
      query: query.value.trim(), conversation: optional(conversation),
      sender: optional(sender), since: optional(since), limit: LIMIT,
    };
  }

  async function run() {
    const asked = params();
    if (!asked.query) return;
    let found;
    try {
      found = await api.call("search", asked);
    } catch (error) {
      api.toast(error.message);
      return;
    }
    note.hidden = found.complete !== false;
    note.textContent = found.complete === false ? (found.note ?? "Some messages were not searched.") : "";
    list.replaceChildren(...(found.hits.length ? found.hits.map(hitCard)
      : [el("li", { class: "muted", "data-testid": "search-none" }, "No message has these words.")]));
  }

  api.on("reconnect", () => (query.value.trim() ? run() : null));
}
