// The people of the mesh: status, summary and surface, kept current from presence events.

import { el, fill, surfaceLabel, surfacesOf } from "./dom.js";

const STATUS_ORDER = ["working", "online", "idle", "away", "dnd", "offline"];
const STATUS_WORDS = {
  online: "online", idle: "idle", working: "working", dnd: "do not disturb", away: "away",
  offline: "offline",
};

/** Where a peer's messages go when it is not online: say it plainly, not just "offline". */
function statusText(peer) {
  if (peer.online || peer.reach === "live") return STATUS_WORDS[peer.status] ?? peer.status;
  if (peer.reach === "connector") return `via ${surfaceLabel(peer.connector)}`;
  return "offline, messages wait";
}

function rank(peer) {
  const status = peer.online || peer.reach !== "inbox" ? peer.status : "offline";
  const at = STATUS_ORDER.indexOf(status);
  return at < 0 ? STATUS_ORDER.length : at;
}

export class PresenceList {
  constructor(container, page) {
    this.container = container;
    this.page = page;
    this.list = el("ul", { class: "people-list", "data-testid": "presence-list" });
    fill(container,
      el("header", { class: "pane-header" }, el("h2", {}, "People"),
        el("button", {
          type: "button", class: "icon-button only-narrow", "aria-label": "Close the people list",
          onclick: () => page.showPeople(false),
        }, "✕")),
      this.list);
  }

  render() {
    const peers = [...this.page.peers.values()]
      .sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
    fill(this.list, peers.map((peer) => this.row(peer)));
  }

  row(peer) {
    const status = peer.online || peer.reach === "live" ? peer.status : "offline";
    return el("li", {
      class: "person", "data-testid": "peer", "data-name": peer.name, "data-status": status,
    },
    el("button", {
      type: "button", class: "person-button", disabled: peer.you,
      title: peer.you ? "You" : `Message ${peer.name}`,
      onclick: () => this.page.openView(`dm:${peer.name}`),
    },
    el("span", { class: `status-dot status-${status}`, "aria-hidden": "true" }),
    el("span", { class: "person-text" },
      el("span", { class: "person-line" },
        el("span", { class: "person-name" }, peer.you ? `${peer.name} (you)` : peer.name),
        el("span", { class: "surface", "data-testid": "peer-surface" },
          surfacesOf(peer))),
      el("span", { class: "person-status", "data-testid": "peer-status" }, statusText(peer)),
      peer.summary
        ? el("span", { class: "person-summary", "data-testid": "peer-summary" }, peer.summary)
        : null)));
  }
}
