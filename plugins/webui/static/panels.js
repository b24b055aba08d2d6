// Panels: ES modules the hub lists in the session (`/web/panels/<name>.js`), each exporting
// `title` and `mount(element, api)`. A panel is mounted the first time it is opened and kept
// after, so it can follow live messages.

import { el, fill } from "./dom.js";

export class Panels {
  constructor(container, page) {
    this.container = container;
    this.page = page;
    this.modules = new Map();
    this.mounted = new Map();
    this.reconnectHandlers = new Set();
  }

  /** Import every listed module; one that fails is listed with its error, not dropped. */
  async load(listed) {
    const loaded = await Promise.all(listed.map(async ({ name, module }) => {
      try {
        const code = await import(module);
        this.modules.set(name, { code });
        return { name, title: String(code.title ?? name) };
      } catch (error) {
        this.modules.set(name, { error });
        return { name, title: `${name} (failed)` };
      }
    }));
    return loaded;
  }

  api() {
    const page = this.page;
    return {
      me: page.me,
      limits: page.limits,
      el,
      call: (action, params = {}) => page.hub.call(action, params),
      /** "message": fn(message, html); "presence": fn(peer, change); "approval": fn(view)
       * when an approval you asked or must answer is settled; "record": fn(event) when a
       * feature's document you may see changed (docs/protocol.md); "reconnect": fn(). */
      on: (name, fn) => {
        if (name === "message") return page.hub.on("message", (p) => fn(p.message, p.html));
        if (name === "presence") return page.hub.on("presence", (f) => fn(f.peer, f.change));
        if (name === "approval") return page.hub.on("approval", fn);
        if (name === "record") return page.hub.on("record", fn);
        if (name === "reconnect") {
          this.reconnectHandlers.add(fn);
          return () => this.reconnectHandlers.delete(fn);
        }
        throw new Error(`unknown panel event ${name}`);
      },
      openMessage: (message) => page.openMessage(message),
      toast: (text) => page.toastText(text),
      signOut: () => page.signOut(),
    };
  }

  async show(name) {
    for (const box of this.mounted.values()) box.hidden = true;
    let box = this.mounted.get(name);
    if (!box) {
      box = el("section", { class: "panel", "data-testid": `panel-${name}` });
      this.mounted.set(name, box);
      this.container.append(box);
      await this.mount(name, box);
    }
    box.hidden = false;
  }

  async mount(name, box) {
    const entry = this.modules.get(name);
    if (!entry || entry.error) {
      fill(box, el("p", { class: "error" },
        `The ${name} panel could not be loaded: ${entry?.error?.message ?? "not listed"}`));
      return;
    }
    try {
      await entry.code.mount(box, this.api());
    } catch (error) {
      fill(box, el("p", { class: "error" }, `The ${name} panel failed: ${error.message}`));
    }
  }

  reconnected() {
    for (const fn of this.reconnectHandlers) fn();
  }
}
