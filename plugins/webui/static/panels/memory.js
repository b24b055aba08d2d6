// The mesh's memory: recall (words, tags, forgotten ones too), remember something with tags,
// forget a memory and restore one you forgot. A memory is a peer's text: it is shown as text
// nodes only, and the words a search matched (between the hub's snippet marks) become <mark>
// elements built here.

export const title = "Memory";

const SHOWN = 30;

/** A snippet as [text, marked] pieces. The hub marks the words found between ⟦ and ⟧ and
 * escapes the memory's own ⟦, ⟧ and \ with a backslash, so only unescaped ones are marks. */
function pieces(snippet) {
  const out = [];
  let text = "";
  let marked = false;
  for (let i = 0; i < snippet.length; i += 1) {
    const c = snippet[i];
    if (c === "\\" && i + 1 < snippet.length) {
      i += 1;
      text += snippet[i];
    } else if (c === "⟦" || c === "⟧") {
      out.push([text, marked]);
      text = "";
      marked = c === "⟦";
    } else {
      text += c;
    }
  }
  out.push([text, marked]);
  return out.filter(([part]) => part);
}

/** Tags as typed: words separated by spaces or commas. */
function tagList(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

export async function mount(element, api) {
  const { el } = api;
  const query = el("input", {
    type: "text", placeholder: "words to recall", "aria-label": "Recall",
    "data-testid": "memory-query",
  });
  const queryTags = el("input", {
    type: "text", placeholder: "tags (all of them)", "aria-label": "Only with tags",
    "data-testid": "memory-query-tags",
  });
  const forgotten = el("input", { type: "checkbox", "data-testid": "memory-show-forgotten" });
  const recallForm = el("form", { class: "memory-form", "data-testid": "memory-recall" },
    query, queryTags,
    el("label", { class: "muted" }, forgotten, " show forgotten ones too"),
    el("div", { class: "button-row" }, el("button", { type: "submit", class: "primary" },
      "Recall")));
  recallForm.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });

  const content = el("textarea", {
    rows: 3, placeholder: "something the mesh should remember", "aria-label": "Remember",
    "data-testid": "memory-content",
  });
  const tags = el("input", {
    type: "text", placeholder: "tags: lower-case words, e.g. deploy, db",
    "aria-label": "Tags", "data-testid": "memory-tags",
  });
  const rememberForm = el("form", { class: "memory-form", "data-testid": "memory-remember" },
    content, tags,
    el("div", { class: "button-row" }, el("button", { type: "submit" }, "Remember")));
  rememberForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.call("remember", { content: content.value, tags: tagList(tags.value) });
      content.value = "";
      tags.value = "";
      query.value = "";  // show the newest, the one just remembered first
      queryTags.value = "";
    } catch (error) {
      api.toast(error.message);
    }
    await refresh();
  });

  const list = el("ul", { class: "card-list", "data-testid": "memory-list" });
  element.replaceChildren(
    el("h2", {}, "Remember"), rememberForm,
    el("h2", {}, "Recall"), recallForm, list);

  /** The snippet's text, its marked words as <mark> elements. */
  function highlighted(snippet) {
    return pieces(snippet).map(([text, marked]) => (marked ? el("mark", {}, text) : text));
  }

  async function act(action, id) {
    try {
      await api.call(action, { id });
    } catch (error) {
      api.toast(error.message);
    }
    await refresh();
  }

  function card(memory) {
    const gone = memory.forgotten_at !== undefined;
    // the snippet may come from the tags (the search looks there too): then the text is shown
    const plain = memory.snippet === undefined ? undefined
      : pieces(memory.snippet).map(([text]) => text).join("");
    const excerpt = plain !== undefined && memory.content.includes(plain.replace(/^…|…$/g, ""));
    const when = (seconds) => new Date(seconds * 1000).toLocaleString();
    return el("li", {
      class: gone ? "card memory forgotten" : "card memory", "data-testid": "memory",
      "data-id": memory.id, "data-forgotten": gone,
    },
    el("p", { class: "memory-text", "data-testid": "memory-text" },
      excerpt ? highlighted(memory.snippet) : memory.content),
    excerpt && plain !== memory.content ? el("details", {},
      el("summary", { class: "muted" }, "whole text"),
      el("p", { class: "memory-text" }, memory.content)) : null,
    memory.tags.length ? el("div", { class: "button-row" },
      memory.tags.map((tag) => el("span", { class: "pill", "data-testid": "memory-tag" }, tag)))
      : null,
    el("p", { class: "muted" }, `remembered by ${memory.author} ${when(memory.created_at)}`
      + (gone ? ` · forgotten by ${memory.forgotten_by} ${when(memory.forgotten_at)}` : "")),
    el("div", { class: "button-row" }, gone
      ? el("button", { type: "button", "data-testid": "memory-restore",
        onclick: () => act("restore", memory.id) }, "Restore")
      : el("button", { type: "button", class: "danger", "data-testid": "memory-forget",
        onclick: () => act("forget", memory.id) }, "Forget")));
  }

  async function refresh() {
    let found;
    try {
      found = await api.call("recall", {
        query: query.value.trim() || null, tags: tagList(queryTags.value), limit: SHOWN,
        include_forgotten: forgotten.checked,
      });
    } catch (error) {
      api.toast(error.message);
      return;
    }
    list.replaceChildren(...(found.length ? found.map(card)
      : [el("li", { class: "muted", "data-testid": "memory-none" }, "Nothing recalled.")]));
  }

  api.on("reconnect", refresh);
  await refresh();
}
