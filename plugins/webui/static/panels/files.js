// Files you uploaded or received: download any, upload by dropping files here or choosing
// them (base64 inside one WebSocket frame, so the hub's frame limit bounds its size), share one
// with the mesh. Below, the files shared with the mesh: search them by words and tags, share a
// new one with tags (streamed to the hub's upload route with a one-use ticket, so up to the
// hub's file limit), and for your own, see who fetched it and delete it. Names, tags and
// descriptions are peers' text: shown as text nodes only.

import { byteSize, download, fromBase64, toBase64 } from "/web/static/dom.js";

export const title = "Files";

const BASE64_GROWTH = 4 / 3;
const FRAME_OVERHEAD = 4096;

export async function mount(element, api) {
  const { el } = api;
  const list = el("ul", { class: "card-list", "data-testid": "files-list" });
  const input = el("input", {
    type: "file", multiple: true, "data-testid": "file-input", class: "file-input",
    onchange: () => {
      upload([...input.files]);
      input.value = "";
    },
  });
  const drop = el("label", { class: "drop-zone", "data-testid": "file-drop" },
    el("span", {}, "Drop files here, or "), el("span", { class: "link" }, "choose files"), input);
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    upload([...event.dataTransfer.files]);
  });
  const shared = sharedSection(api);
  element.replaceChildren(drop, list, shared.element);

  function biggest() {
    const frame = api.limits?.max_frame_bytes ?? 1024 * 1024;
    return Math.floor((frame - FRAME_OVERHEAD) / BASE64_GROWTH);
  }

  async function upload(files) {
    for (const file of files) {
      if (file.size > biggest()) {
        api.toast(`${file.name} is too large: this hub takes files up to ${byteSize(biggest())}`);
        continue;
      }
      try {
        const content = toBase64(await file.arrayBuffer());
        await api.call("file_put", { name: file.name, content, mime: file.type || null });
      } catch (error) {
        api.toast(`${file.name}: ${error.message}`);
      }
    }
    await refresh();
  }

  async function save(file) {
    try {
      const got = await api.call("file_get", { id: file.file });
      download(fromBase64(got.content), got.name);
    } catch (error) {
      api.toast(error.message);
    }
  }

  async function refresh() {
    const files = await api.call("files", { limit: 200 });
    list.replaceChildren(...(files.length ? files.map((file) => el("li", {
      class: "card file-row", "data-testid": "file", "data-name": file.name,
    },
    el("div", {},
      el("p", { class: "card-title" }, file.name),
      el("p", { class: "muted" }, `${byteSize(file.size)} · ${file.mime} · `
        + `${file.uploaded ? "uploaded" : "received"} ${new Date(file.created_at * 1000).toLocaleString()}`)),
    el("div", { class: "button-row" },
      el("button", {
        type: "button", "data-testid": "file-download", onclick: () => save(file),
      }, "Download"),
      el("button", {
        type: "button", "data-testid": "file-share", onclick: () => shareKnown(file),
      }, "Share")))) : [el("li", { class: "muted" }, "No files yet.")]));
  }

  async function shareKnown(file) {
    try {
      await api.call("file_share", { id: file.file });
      await shared.refresh();
    } catch (error) {
      api.toast(error.message);
    }
  }

  api.on("message", (message) => {
    if (message.attachments.length) refresh();
  });
  api.on("reconnect", () => Promise.all([refresh(), shared.refresh()]));
  api.on("record", (change) => {
    if (change.collection === "file_shares") shared.refresh();
  });
  await Promise.all([refresh(), shared.refresh()]);
}

/** Tags as typed: words separated by spaces or commas. */
function tagList(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/** The route's result, or its error thrown as an Error with the hub's message. */
async function routeResult(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error?.message ?? `the hub answered ${response.status}`);
  return body.result;
}

/** The files shared with the mesh: search, share with tags, status and delete for your own. */
function sharedSection(api) {
  const { el } = api;
  const query = el("input", {
    type: "text", placeholder: "words to find", "aria-label": "Find shared files",
    "data-testid": "shared-query",
  });
  const queryTags = el("input", {
    type: "text", placeholder: "tags (all of them)", "aria-label": "Only with tags",
    "data-testid": "shared-query-tags",
  });
  const findForm = el("form", { class: "memory-form", "data-testid": "shared-find" },
    query, queryTags,
    el("div", { class: "button-row" }, el("button", { type: "submit" }, "Find")));
  findForm.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });

  const chosen = el("input", { type: "file", "data-testid": "share-input" });
  const tags = el("input", {
    type: "text", placeholder: "tags", "aria-label": "Tags", "data-testid": "share-tags",
  });
  const description = el("input", {
    type: "text", placeholder: "what it is", "aria-label": "Description",
    "data-testid": "share-description",
  });
  const shareForm = el("form", { class: "memory-form", "data-testid": "share-form" },
    chosen, tags, description,
    el("div", { class: "button-row" }, el("button", { type: "submit", class: "primary" },
      "Share with the mesh")));
  shareForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = chosen.files[0];
    if (!file) {
      api.toast("choose a file to share");
      return;
    }
    try {
      const ticket = await api.call("token_file_transfer", {});
      const params = new URLSearchParams({
        name: file.name, share: "1", tags: tagList(tags.value).join(","),
        description: description.value,
      });
      await routeResult(await fetch(`${ticket.upload}?${params}`, {
        method: "POST", body: file, headers: { Authorization: `Bearer ${ticket.ticket}` },
      }));
      shareForm.reset();
      await refresh();
    } catch (error) {
      api.toast(`${file.name}: ${error.message}`);
    }
  });

  const list = el("ul", { class: "card-list", "data-testid": "shared-list" });
  const element = el("section", { "data-testid": "shared-files" },
    el("h3", {}, "Shared with the mesh"), findForm, shareForm, list);

  async function fetchShared(file) {
    try {
      const ticket = await api.call("token_file_transfer", {});
      const response = await fetch(ticket.download.replace("{id}", file.id), {
        headers: { Authorization: `Bearer ${ticket.ticket}` },
      });
      if (!response.ok) await routeResult(response);
      download(new Uint8Array(await response.arrayBuffer()), file.name);
    } catch (error) {
      api.toast(error.message);
    }
  }

  async function showStatus(file, where) {
    try {
      const status = await api.call("file_status", { id: file.id });
      where.replaceChildren(...(status.fetched_by.length ? status.fetched_by.map((f) => el("li", {
        "data-testid": "shared-fetcher",
      }, `${f.peer}: ${f.count}× (first ${new Date(f.first * 1000).toLocaleString()}, last `
        + `${new Date(f.last * 1000).toLocaleString()})`)) : [el("li", { class: "muted" },
        "Nobody fetched it yet.")]));
    } catch (error) {
      api.toast(error.message);
    }
  }

  async function remove(file) {
    try {
      await api.call("file_delete", { id: file.id });
      await refresh();
    } catch (error) {
      api.toast(error.message);
    }
  }

  function row(file) {
    const fetchers = el("ul", { class: "muted", "data-testid": "shared-status" });
    const mine = file.shared_by === api.me?.name;
    return el("li", { class: "card file-row", "data-testid": "shared-file", "data-id": file.id },
      el("div", {},
        el("p", { class: "card-title" }, file.name),
        el("p", { class: "muted" }, `${byteSize(file.size)} · ${file.mime} · shared by `
          + `${file.shared_by} ${new Date(file.shared_at * 1000).toLocaleString()}`),
        file.description && el("p", {}, file.description),
        el("p", { class: "muted" }, ...file.tags.map((tag) => el("span", {
          class: "tag", "data-testid": "shared-tag",
        }, tag))),
        fetchers),
      el("div", { class: "button-row" },
        el("button", {
          type: "button", "data-testid": "shared-download", onclick: () => fetchShared(file),
        }, "Download"),
        mine && el("button", {
          type: "button", "data-testid": "shared-status-button",
          onclick: () => showStatus(file, fetchers),
        }, "Who fetched it"),
        mine && el("button", {
          type: "button", "data-testid": "shared-delete", onclick: () => remove(file),
        }, "Delete")));
  }

  async function refresh() {
    const params = { limit: 100 };
    if (query.value.trim()) params.query = query.value;
    if (tagList(queryTags.value).length) params.tags = tagList(queryTags.value);
    try {
      const found = await api.call("file_list", params);
      list.replaceChildren(...(found.files.length ? found.files.map(row)
        : [el("li", { class: "muted", "data-testid": "shared-none" }, "No shared files.")]));
    } catch (error) {
      api.toast(error.message);
    }
  }

  return { element, refresh };
}
