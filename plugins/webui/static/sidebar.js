// The sidebar: every message, #conversations, direct messages and the panels, with unread
// counts from the hub's `check`.

import { el, fill } from "./dom.js";

export class Sidebar {
  constructor(container, page) {
    this.container = container;
    this.page = page;
    this.conversations = el("ul", { class: "nav-list", "data-testid": "conversations" });
    this.browse = el("ul", { class: "nav-list", "data-testid": "other-conversations" });
    this.dms = el("ul", { class: "nav-list", "data-testid": "dms" });
    this.panels = el("ul", { class: "nav-list", "data-testid": "panel-links" });
    this.newName = el("input", {
      type: "text", "data-testid": "new-conversation-name", placeholder: "name, e.g. release",
      "aria-label": "New conversation name", required: true,
    });
    this.newForm = el("form", {
      class: "new-conversation", hidden: true, "data-testid": "new-conversation",
      onsubmit: (event) => {
        event.preventDefault();
        this.create();
      },
    }, this.newName, el("button", { type: "submit" }, "Create"));
    this.me = el("div", { class: "me", "data-testid": "me" });
    fill(container,
      this.me,
      el("ul", { class: "nav-list" }, this.item("all", "All messages", "nav-all")),
      el("h2", { class: "nav-heading" }, "Conversations",
        el("button", {
          type: "button", class: "icon-button", "aria-label": "New conversation",
          "data-testid": "new-conversation-button", title: "New conversation",
          onclick: () => this.toggleNew(),
        }, "+")),
      this.newForm,
      this.conversations,
      this.browse,
      el("h2", { class: "nav-heading" }, "Direct messages"),
      this.dms,
      el("h2", { class: "nav-heading" }, "Tools"),
      this.panels);
  }

  item(view, label, testid, extra) {
    const unread = view === "all"
      ? (this.page.view === "all" ? 0 : this.page.totalUnread())
      : this.page.unread[view] ?? 0;
    return el("li", {},
      el("button", {
        type: "button", class: "nav-item", "data-view": view, "data-testid": testid,
        "aria-current": this.page.view === view ? "page" : null,
        onclick: () => this.page.openView(view),
      },
      el("span", { class: "nav-label" }, label),
      extra ?? null,
      unread ? el("span", {
        class: "badge", "data-testid": "unread-badge", "aria-label": `${unread} unread`,
      }, String(unread)) : null));
  }

  render() {
    const page = this.page;
    fill(this.me, el("span", { class: "me-name" }, page.me.name),
      el("span", { class: "muted" }, ` on meshhub ${page.session.hub?.version ?? ""}`));
    const joined = page.conversations.filter((c) => c.joined && !c.archived);
    const others = page.conversations.filter((c) => !c.joined && !c.archived);
    fill(this.conversations, joined.map((c) => this.item(c.name, c.name, "conversation")));
    fill(this.browse, others.map((c) => el("li", {},
      el("button", {
        type: "button", class: "nav-item join", "data-testid": "join-conversation",
        title: c.topic || `Join ${c.name}`, onclick: () => page.join(c.name),
      }, el("span", { class: "nav-label" }, c.name), el("span", { class: "muted" }, "join")))));
    const people = [...page.peers.values()].filter((p) => !p.you)
      .sort((a, b) => (page.unread[`dm:${b.name}`] ?? 0) - (page.unread[`dm:${a.name}`] ?? 0)
        || a.name.localeCompare(b.name));
    fill(this.dms, people.map((p) => this.item(`dm:${p.name}`, p.name, "dm",
      el("span", {
        class: `status-dot status-${p.online ? p.status : "offline"}`, "aria-hidden": "true",
      }))));
    fill(this.panels, page.panels.map((panel) => el("li", {},
      el("button", {
        type: "button", class: "nav-item", "data-view": `panel:${panel.name}`,
        "data-testid": `panel-link-${panel.name}`,
        "aria-current": page.view === `panel:${panel.name}` ? "page" : null,
        onclick: () => page.openView(`panel:${panel.name}`),
      }, el("span", { class: "nav-label" }, panel.title)))));
  }

  toggleNew() {
    this.newForm.hidden = !this.newForm.hidden;
    if (!this.newForm.hidden) this.newName.focus();
  }

  async create() {
    const name = this.newName.value.trim().replace(/^#/, "");
    if (!name) return;
    if (await this.page.createConversation(name)) {
      this.newName.value = "";
      this.newForm.hidden = true;
    }
  }
}
