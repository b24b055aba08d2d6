// Files you uploaded or received: download any, upload by dropping files here or choosing
// them. A file travels base64-encoded inside one WebSocket frame, so the hub's frame limit
// bounds its size.

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
  element.replaceChildren(drop, list);

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
    el("button", {
      type: "button", "data-testid": "file-download", onclick: () => save(file),
    }, "Download"))) : [el("li", { class: "muted" }, "No files yet.")]));
  }

  api.on("message", (message) => {
    if (message.attachments.length) refresh();
  });
  api.on("reconnect", refresh);
  await refresh();
}
