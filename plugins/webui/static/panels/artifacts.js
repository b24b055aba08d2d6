// Artifacts: the versioned documents of a conversation you are a member of. Pick the
// conversation, create one, open one to read it (a page at a time), edit it from the version
// you read (an update someone else beat is refused: the panel says by whom and which version
// is current, and keeps your text), and see its history. Changes made anywhere arrive as the
// hub's `record` events. Names, titles, notes and contents are peers' text: text nodes only.

export const title = "Artifacts";

const PAGE = 65536;

export async function mount(element, api) {
  const { el } = api;
  const state = { conversation: "", artifacts: new Map(), open: null };
  const picker = el("select", { "aria-label": "Conversation", "data-testid": "artifacts-conversation",
    onchange: () => choose(picker.value) });
  const list = el("ul", { class: "card-list", "data-testid": "artifacts-list" });
  const viewer = el("section", { class: "artifact-view", "data-testid": "artifact-view",
    hidden: true });
  const nameInput = el("input", { type: "text", placeholder: "name, e.g. plan.md",
    "aria-label": "Name", "data-testid": "artifact-name", maxlength: 200, required: true });
  const kindInput = el("input", { type: "text", value: "doc", "aria-label": "Kind",
    "data-testid": "artifact-kind", maxlength: 32 });
  const contentInput = el("textarea", { rows: 4, placeholder: "content",
    "aria-label": "Content", "data-testid": "artifact-content" });
  const form = el("form", {
    class: "state-form",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const made = await api.call("artifact_create", { conversation: state.conversation,
          name: nameInput.value, kind: kindInput.value.trim() || "doc",
          content: contentInput.value });
        nameInput.value = "";
        contentInput.value = "";
        remember(made);
      } catch (error) {
        api.toast(`${nameInput.value}: ${error.message}`);
      }
    },
  }, nameInput, kindInput, contentInput, el("div", { class: "button-row" },
    el("button", { type: "submit", class: "primary", "data-testid": "artifact-create" },
      "Create")));
  element.replaceChildren(el("h2", {}, "Artifacts of"), picker, list, viewer,
    el("h2", {}, "New artifact"), form);

  function when(at) {
    return new Date(at * 1000).toLocaleString();
  }

  function card(artifact) {
    return el("li", { class: "card", "data-testid": "artifact-entry", "data-id": artifact.id },
      el("p", { class: "card-title" }, artifact.title || artifact.name),
      el("p", { class: "muted" }, `${artifact.kind} · ${artifact.name} · version `
        + `${artifact.version} · by ${artifact.updated_by} · ${when(artifact.updated_at)}`),
      el("div", { class: "button-row" },
        el("button", { type: "button", "data-testid": "artifact-open",
          onclick: () => open(artifact.id) }, "Open"),
        el("button", { type: "button", "data-testid": "artifact-history",
          onclick: () => history(artifact.id) }, "History")));
  }

  function render() {
    const sorted = [...state.artifacts.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
    list.replaceChildren(...(sorted.length ? sorted.map(card)
      : [el("li", { class: "muted", "data-testid": "artifacts-none" }, "No artifacts here yet.")]));
  }

  function remember(artifact) {
    const known = state.artifacts.get(artifact.id);
    if (known && known.revision > artifact.revision) return;
    state.artifacts.set(artifact.id, artifact);
    render();
  }

  /** Every page of a version, put together. */
  async function whole(id, version) {
    let got = await api.call("artifact_get", { id, version, limit: PAGE });
    let text = got.content;
    while (got.next_offset !== null) {
      got = await api.call("artifact_get", { id, version: got.version, offset: got.next_offset,
        limit: PAGE });
      text += got.content;
    }
    return { ...got, content: text };
  }

  async function open(id, version = null) {
    try {
      const got = await whole(id, version);
      state.open = got;
      const body = el("pre", { class: "state-value", "data-testid": "artifact-text" }, got.content);
      const edit = el("button", { type: "button", "data-testid": "artifact-edit",
        hidden: got.version !== got.latest_version, onclick: () => editor(got) }, "Edit");
      viewer.replaceChildren(
        el("h2", { "data-testid": "artifact-heading" }, got.title || got.name),
        el("p", { class: "muted", "data-testid": "artifact-meta" }, `version ${got.version} of `
          + `${got.latest_version} · by ${got.author} · ${when(got.at)}`
          + (got.note ? ` · ${got.note}` : "")),
        body, el("div", { class: "button-row" }, edit));
      viewer.hidden = false;
    } catch (error) {
      api.toast(error.message);
    }
  }

  function editor(got) {
    const text = el("textarea", { rows: 12, "aria-label": "New content",
      "data-testid": "artifact-editor" });
    text.value = got.content;
    const note = el("input", { type: "text", placeholder: "what changed", maxlength: 500,
      "aria-label": "Note", "data-testid": "artifact-note" });
    const conflict = el("p", { class: "error", "data-testid": "artifact-conflict", hidden: true });
    const save = el("button", { type: "button", class: "primary", "data-testid": "artifact-save",
      onclick: async () => {
        try {
          const saved = await api.call("artifact_update", { id: got.id, content: text.value,
            base_version: got.version, note: note.value });
          remember(saved);
          await open(got.id);
        } catch (error) {
          conflict.textContent = error.code === "conflict"
            ? `Not saved: ${error.message} Your text is kept here; reopen to merge.`
            : `Not saved: ${error.message}`;
          conflict.hidden = false;
        }
      } }, `Save (from version ${got.version})`);
    viewer.replaceChildren(el("h2", {}, `Edit ${got.title || got.name}`), text, note, conflict,
      el("div", { class: "button-row" }, save,
        el("button", { type: "button", onclick: () => open(got.id) }, "Reopen")));
  }

  async function history(id) {
    try {
      const got = await api.call("artifact_history", { id });
      viewer.replaceChildren(el("h2", {}, `History of ${got.title || got.name}`),
        el("ul", { class: "card-list", "data-testid": "artifact-versions" },
          ...got.versions.map((v) => el("li", { class: "card", "data-testid": "artifact-version",
            "data-n": v.n },
          el("p", {}, `version ${v.n} · by ${v.author} · ${when(v.at)} · ${v.size} bytes`
            + (v.note ? ` · ${v.note}` : "")),
          el("button", { type: "button", onclick: () => open(id, v.n) }, "Open")))));
      viewer.hidden = false;
    } catch (error) {
      api.toast(error.message);
    }
  }

  async function choose(name) {
    state.conversation = name;
    state.artifacts.clear();
    viewer.hidden = true;
    if (!name) return render();
    try {
      const listed = await api.call("artifacts", { conversation: name });
      for (const artifact of listed.artifacts) state.artifacts.set(artifact.id, artifact);
    } catch (error) {
      api.toast(error.message);
    }
    render();
  }

  async function refresh() {
    const convs = (await api.call("conversations", {})).filter((c) => c.joined);
    picker.replaceChildren(...convs.map((c) => el("option", { value: c.name }, c.name)));
    const keep = convs.some((c) => c.name === state.conversation);
    picker.value = keep ? state.conversation : (convs.length ? convs[0].name : "");
    await choose(picker.value);
  }

  api.on("record", (event) => {
    if (event.collection !== "artifacts") return;
    if (event.op !== "put") {
      if (state.artifacts.delete(event.key)) render();
      return;
    }
    const doc = event.value;
    if (doc.conversation !== state.conversation) return;
    const latest = doc.versions[doc.versions.length - 1];
    remember({ id: doc.id, conversation: doc.conversation, name: doc.name, kind: doc.kind,
      title: doc.title, version: doc.version, updated_by: latest.author,
      updated_at: latest.at, revision: event.revision });
  });
  api.on("reconnect", refresh);
  await refresh();
}
