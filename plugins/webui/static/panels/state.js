// The mesh's shared state: every mesh-wide key with its value, who set it and when; set a key
// (the value is read as JSON, or taken as a plain string when it is not JSON) or delete one.
// Changes made anywhere (another tab, a Claude Code session, the command line) arrive as the
// hub's `record` events and show at once. Values are peers' data: shown as text only. The
// panel lists the first page of keys (1000), and says so when there are more.

export const title = "State";

export async function mount(element, api) {
  const { el } = api;
  const entries = new Map(); // key -> entry (the state_get shape)
  const list = el("ul", { class: "card-list", "data-testid": "state-list" });
  const keyInput = el("input", {
    type: "text", placeholder: "key, e.g. build/status", "aria-label": "Key",
    "data-testid": "state-key", maxlength: 128, required: true,
  });
  const valueInput = el("textarea", {
    rows: 3, placeholder: "value: JSON (\"text\", 3, {\"a\": 1}) or plain text",
    "aria-label": "Value", "data-testid": "state-value",
  });
  const form = el("form", {
    class: "state-form",
    onsubmit: async (event) => {
      event.preventDefault();
      const key = keyInput.value.trim();
      if (!key) return;
      try {
        show(await api.call("state_set", { key, value: parsed(valueInput.value) }));
        valueInput.value = "";
      } catch (error) {
        api.toast(`${key}: ${error.message}`);
      }
    },
  }, keyInput, valueInput,
  el("div", { class: "button-row" },
    el("button", { type: "submit", class: "primary", "data-testid": "state-set" }, "Set")));
  const more = el("p", { class: "muted", "data-testid": "state-more", hidden: true },
    "Only the first 1000 keys are shown: there are more (state_list with after pages on).");
  element.replaceChildren(el("h2", {}, "Set a key"), form, el("h2", {}, "Shared state"), more,
    list);

  function parsed(text) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  function card(entry) {
    const when = entry.updated_at ? new Date(entry.updated_at * 1000).toLocaleString() : "";
    return el("li", { class: "card state-row", "data-testid": "state-entry", "data-key": entry.key },
      el("p", { class: "card-title" }, entry.key),
      el("pre", { class: "state-value", "data-testid": "state-entry-value" },
        JSON.stringify(entry.value, null, 2)),
      el("p", { class: "muted" }, `by ${entry.author ?? "?"} · revision ${entry.revision} · ${when}`),
      el("div", { class: "button-row" }, el("button", {
        type: "button", "data-testid": "state-delete",
        onclick: async () => {
          try {
            await api.call("state_delete", { key: entry.key });
            forget(entry.key);
          } catch (error) {
            api.toast(`${entry.key}: ${error.message}`);
          }
        },
      }, "Delete")));
  }

  function render() {
    const sorted = [...entries.keys()].sort();
    list.replaceChildren(...(sorted.length ? sorted.map((key) => card(entries.get(key)))
      : [el("li", { class: "muted", "data-testid": "state-none" }, "No shared state yet.")]));
  }

  /** Show an entry unless what is shown is newer (events and answers may cross). */
  function show(entry) {
    const known = entries.get(entry.key);
    if (known && known.revision > entry.revision) return;
    entries.set(entry.key, entry);
    render();
  }

  function forget(key) {
    if (entries.delete(key)) render();
  }

  async function refresh() {
    const listed = await api.call("state_list", {});
    entries.clear();
    for (const entry of listed.entries) entries.set(entry.key, entry);
    more.hidden = !listed.more;
    render();
  }

  api.on("record", (event) => {
    if (event.collection !== "state" || event.key.startsWith("#")) return; // a conversation's
    if (event.op === "put") {
      const doc = event.value;
      show({ key: doc.key, scope: doc.scope, value: doc.value, author: doc.author,
        revision: event.revision, updated_at: event.at });
    } else {
      forget(event.key);
    }
  });
  api.on("reconnect", refresh);
  await refresh();
}
