// The meshhub web page: signed in by its session (a cookie and the page's half, session.js),
// it lives on one WebSocket. Page holds what the views share (me, peers, conversations,
// unread counts, reactions, reply counts) and wires the views together.

import { Composer } from "./composer.js";
import { download, el, fromBase64, surfacesOf, visible } from "./dom.js";
import { Panels } from "./panels.js";
import { PresenceList } from "./presence.js";
import { forgetSession, onSessionReplaced, sessionFetch } from "./session.js";
import { Sidebar } from "./sidebar.js";
import { HubError, HubSocket } from "./socket.js";
import { ThreadPanel } from "./thread.js";
import { SILENT_KINDS, Timeline } from "./timeline.js";

const RECEIPTS_EVERY_MS = 15_000;
const REACTIONS_PER_CALL = 200;
const SEEN_LIMIT = 5000;
const MARK_READ_DELAY_MS = 200;
const TOAST_MS = 6000;
const $ = (id) => document.getElementById(id);

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/web/ws`;
}

function clientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Show a short notice (an error the person can act on, mostly). */
function toast(text) {
  const note = el("div", { class: "toast", role: "status", "data-testid": "toast" }, text);
  $("toasts").append(note);
  setTimeout(() => note.remove(), TOAST_MS);
}

function showSignIn(reason) {
  $("app").hidden = true;
  $("loading").hidden = true;
  $("reconnecting").hidden = true;
  $("signin-reason").textContent = reason;
  $("signin").hidden = false;
  document.title = "meshhub: sign in";
}

class Page {
  constructor(session) {
    this.session = session;
    this.me = session.peer;
    this.limits = session.limits ?? {};
    this.hub = new HubSocket(socketUrl());
    this.peers = new Map();
    this.conversations = [];
    this.unread = {};
    this.replies = new Map();
    this.reactions = new Map();
    this.seen = new Set();
    this.toMarkRead = new Set();
    this.markTimer = null;
    this.sidebarFrame = null;
    this.view = null;
    this.panels = [];
    for (const name of ["openView", "openThread", "react", "download", "suggest", "reply"]) {
      this[name] = this[name].bind(this);
    }
    this.sidebar = new Sidebar($("sidebar"), this);
    this.timeline = new Timeline($("messages"), this);
    this.composer = new Composer({
      testid: "composer", placeholder: "Message", whisper: true, suggest: this.suggest,
      send: (draft) => this.send(draft),
    });
    $("conversation").append(this.composer.form);
    this.thread = new ThreadPanel($("thread"), this);
    this.presence = new PresenceList($("people"), this);
    this.panelHost = new Panels($("panel-view"), this);
  }

  start() {
    this.hub.on("welcome", (frame) => this.welcomed(frame));
    this.hub.on("message", (pushed) => this.received(pushed.message, pushed.html));
    this.hub.on("presence", (frame) => this.presenceChanged(frame.peer));
    this.hub.on("reconnecting", () => { $("reconnecting").hidden = false; });
    this.hub.on("signedout", (code) => {
      forgetSession();
      showSignIn(code === 4003
        ? "You were removed from this hub."
        : "You are signed out: this session ended or was revoked.");
    });
    this.bindChrome();
    this.hub.open();
    this.panelHost.load(this.session.panels ?? []).then((panels) => {
      this.panels = panels;
      this.sidebar.render();
    });
    setInterval(() => {
      if (document.visibilityState === "visible" && !this.view?.startsWith("panel:")) {
        this.timeline.refreshRecentReceipts();
      }
    }, RECEIPTS_EVERY_MS);
  }

  bindChrome() {
    $("menu-button").addEventListener("click", () => this.showSidebar(!this.sidebarOpen()));
    $("people-button").addEventListener("click", () => this.showPeople(!this.peopleOpen()));
    $("scrim").addEventListener("click", () => {
      this.showSidebar(false);
      this.showPeople(false);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || event.defaultPrevented) return;
      const picker = document.querySelector(".emoji-picker");
      if (picker) picker.remove();
      else if (this.thread.isOpen) this.thread.close();
      else {
        this.showSidebar(false);
        this.showPeople(false);
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      // what arrived while the tab was hidden is read once the person looks at it
      this.markRead(this.timeline.shownMessages());
      this.refreshUnread();
    });
  }

  async welcomed(frame) {
    this.me = frame.peer;
    $("reconnecting").hidden = true;
    await this.refresh();
    $("loading").hidden = true;
    $("app").hidden = false;
    if (!frame.reconnected) {
      const general = this.conversations.find((c) => c.name === "#general" && c.joined);
      await this.openView(general ? "#general" : "all");
      return;
    }
    // whatever was said while the socket was down: read the open view again
    if (!this.view.startsWith("panel:")) await this.timeline.show(this.view);
    if (this.thread.isOpen) await this.thread.load();
    this.panelHost.reconnected();
  }

  async refresh() {
    const [peers, conversations] = await Promise.all([
      this.hub.call("peers"), this.hub.call("conversations"),
    ]);
    this.peers = new Map(peers.map((p) => [p.key, p]));
    this.conversations = conversations;
    await this.refreshUnread();
    this.presence.render();
  }

  async refreshUnread() {
    const counts = await this.hub.call("check").catch(() => null);
    if (!counts) return;
    this.unread = { ...(counts.by_conversation ?? {}) };
    if (this.view) delete this.unread[this.view];
    const total = this.totalUnread();
    const where = this.view ? `: ${this.titleOf(this.view)}` : "";
    document.title = `${total ? `(${total}) ` : ""}meshhub${where}`;
    this.sidebar.render();
  }

  /** Unread messages everywhere, for the "All messages" badge. */
  totalUnread() {
    return Object.values(this.unread).reduce((a, b) => a + b, 0);
  }

  peerNamed(name) {
    for (const peer of this.peers.values()) if (peer.name === name) return peer;
    return null;
  }

  /** The sidebar view a top-level message belongs to: "#name", "dm:<name>" or null. */
  viewOf(message) {
    if (message.conversation.startsWith("#")) return message.conversation;
    if (message.conversation !== "dm") return null;
    if (message.from !== this.me.name) return `dm:${message.from}`;
    const to = this.peers.get(message.to)?.name ?? message.to;
    return `dm:${to}`;
  }

  received(message, html) {
    if (this.seen.has(message.id)) return; // a redelivery after a lost ack
    this.seen.add(message.id);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
    if (SILENT_KINDS.has(message.kind)) {
      if (message.kind === "reaction" && message.data?.message_id) {
        this.loadReactions([message.data.message_id]);
      }
      this.markRead([message]); // shown as the reaction itself, so it is read
      return;
    }
    if (message.reply_to) {
      if (this.thread.isOpen && message.reply_to === this.thread.root) {
        this.thread.add(message, html);
        this.markRead([message]);
      }
      this.replies.set(message.reply_to, (this.replies.get(message.reply_to) ?? 0) + 1);
      this.timeline.repaintReplies(message.reply_to);
      return;
    }
    const view = this.viewOf(message);
    if (this.view === "all" || (view && view === this.view)) {
      this.timeline.add(message, html);
      return;
    }
    const key = view ?? "all";
    this.unread[key] = (this.unread[key] ?? 0) + 1;
    this.renderSidebarSoon();
  }

  presenceChanged(peer) {
    if (!peer) return;
    if (peer.key === this.me.key) this.me = { ...peer, you: true };
    else this.peers.set(peer.key, peer);
    this.presence.render();
    this.renderSidebarSoon();
    if (this.view === `dm:${peer.name}`) this.paintTitle();
  }

  titleOf(view) {
    if (view === "all") return "All messages";
    if (view.startsWith("dm:")) return view.slice(3);
    if (view.startsWith("panel:")) {
      return this.panels.find((p) => `panel:${p.name}` === view)?.title ?? view.slice(6);
    }
    return view;
  }

  paintTitle() {
    $("view-title").textContent = visible(this.titleOf(this.view));
    let topic = "";
    if (this.view === "all") topic = "Everything you sent or received";
    else if (this.view.startsWith("#")) {
      topic = this.conversations.find((c) => c.name === this.view)?.topic ?? "";
    } else if (this.view.startsWith("dm:")) {
      const peer = this.peerNamed(this.view.slice(3));
      const status = peer?.online ? peer.status : "offline";
      if (peer) topic = [surfacesOf(peer), status, peer.summary].filter(Boolean).join(" · ");
    }
    $("view-topic").textContent = visible(topic);
  }

  async openView(view) {
    this.view = view;
    this.showSidebar(false);
    this.showPeople(false);
    delete this.unread[view];
    this.paintTitle();
    this.sidebar.render();
    const panel = view.startsWith("panel:");
    $("conversation").hidden = panel;
    $("panel-view").hidden = !panel;
    if (panel) {
      this.thread.close();
      await this.panelHost.show(view.slice(6));
      return;
    }
    this.composer.setEnabled(view !== "all", view === "all"
      ? "Pick a conversation or a person to write to"
      : `Message ${this.titleOf(view)}`);
    await this.timeline.show(view).catch((error) => toast(error.message));
    this.refreshUnread();
  }

  async send({ text, whisper }) {
    this.checkSize(text);
    const to = this.view.startsWith("dm:") ? this.view.slice(3) : this.view;
    const params = { to, text, client_id: clientId() };
    if (whisper.length) params.whisper = whisper;
    await this.hub.call("send", params);
    await this.timeline.catchUp();
  }

  async reply(root, text) {
    this.checkSize(text);
    await this.hub.call("send", { reply_to: root, text, client_id: clientId() });
    await this.thread.load();
  }

  checkSize(text) {
    const size = new TextEncoder().encode(text).length;
    const most = this.limits.max_body_bytes;
    if (most && size > most) {
      throw new HubError("too_large", `The message is ${size} bytes; this hub accepts at most ${most}.`);
    }
  }

  async openThread(root) {
    await this.thread.open(root).catch((error) => toast(error.message));
  }

  /** Show a message where it was said: its conversation, and its thread open on it. */
  async openMessage(message) {
    await this.openView(this.viewOf(message) ?? "all");
    await this.openThread(message.reply_to ?? message.id);
    this.thread.highlight(message.id);
  }

  async react(id, emoji, remove) {
    try {
      const result = await this.hub.call("react", { id, emoji, remove });
      this.reactions.set(id, result.reactions);
      this.repaintReactions(id);
    } catch (error) {
      toast(error.message);
    }
  }

  async loadReactions(ids) {
    for (let at = 0; at < ids.length; at += REACTIONS_PER_CALL) {
      const some = ids.slice(at, at + REACTIONS_PER_CALL);
      const known = await this.hub.call("reactions", { ids: some }).catch(() => null);
      if (!known) return;
      for (const id of some) {
        this.reactions.set(id, known[id] ?? {});
        this.repaintReactions(id);
      }
    }
  }

  repaintReactions(id) {
    this.timeline.repaintReactions(id);
    this.thread.repaintReactions(id);
  }

  repaintReplies(root) {
    this.timeline.repaintReplies(root);
  }

  /** Mark what the person has on screen as read: the sender sees it in message_status. */
  markRead(messages) {
    if (document.visibilityState !== "visible") return;
    for (const m of messages) if (m.from !== this.me.name) this.toMarkRead.add(m.id);
    if (!this.toMarkRead.size || this.markTimer) return;
    // one call for whatever arrives together (a backlog, a page of history)
    this.markTimer = setTimeout(() => {
      this.markTimer = null;
      const ids = [...this.toMarkRead];
      this.toMarkRead.clear();
      this.hub.call("mark_read", { ids }).then(() => this.refreshUnread(), () => {});
    }, MARK_READ_DELAY_MS);
  }

  /** Re-render the sidebar once for a burst of changes (a backlog of 500 pushes, say). */
  renderSidebarSoon() {
    if (this.sidebarFrame) return;
    this.sidebarFrame = requestAnimationFrame(() => {
      this.sidebarFrame = null;
      this.sidebar.render();
    });
  }

  async download(file) {
    try {
      const got = await this.hub.call("file_get", { id: file.file });
      download(fromBase64(got.content), got.name);
    } catch (error) {
      toast(error.message);
    }
  }

  suggest(sigil, prefix) {
    const wanted = prefix.toLowerCase();
    if (sigil === "#") {
      return this.conversations.filter((c) => c.name.slice(1).toLowerCase().startsWith(wanted))
        .map((c) => ({ value: c.name, label: c.name, detail: c.topic }));
    }
    return [...this.peers.values()].filter((p) => !p.you && p.name.toLowerCase().startsWith(wanted))
      .map((p) => ({ value: `@${p.name}`, label: p.name, detail: surfacesOf(p) }));
  }

  async createConversation(name) {
    try {
      await this.hub.call("conversation_create", { name });
    } catch (error) {
      toast(error.message);
      return false;
    }
    await this.refresh();
    await this.openView(`#${name.toLowerCase()}`);
    return true;
  }

  async join(name) {
    try {
      await this.hub.call("conversation_join", { name });
    } catch (error) {
      toast(error.message);
      return;
    }
    await this.refresh();
    await this.openView(name);
  }

  toastText(text) {
    toast(text);
  }

  async signOut() {
    try {
      await sessionFetch("/web/logout", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      });
    } finally {
      forgetSession();
      this.hub.stop();
    }
    showSignIn("You signed out.");
  }

  showThread(open) {
    $("thread").hidden = !open;
    $("app").classList.toggle("thread-open", open);
  }

  sidebarOpen() {
    return $("app").classList.contains("sidebar-open");
  }

  peopleOpen() {
    return $("app").classList.contains("people-open");
  }

  showSidebar(open) {
    $("app").classList.toggle("sidebar-open", open);
    $("menu-button").setAttribute("aria-expanded", String(open));
    $("scrim").hidden = !(open || this.peopleOpen());
  }

  showPeople(open) {
    $("app").classList.toggle("people-open", open);
    $("people-button").setAttribute("aria-expanded", String(open));
    $("scrim").hidden = !(open || this.sidebarOpen());
  }
}

async function boot() {
  onSessionReplaced(() => location.reload()); // signed in again elsewhere: follow
  let response;
  try {
    response = await sessionFetch("/web/api/session");
  } catch {
    showSignIn("The hub does not answer. Is it running?");
    return;
  }
  const session = response.ok ? await response.json() : null;
  if (session && !session.peer) {
    showSignIn("");
    return;
  }
  if (!session) {
    showSignIn(`The hub answered ${response.status}; try reloading the page.`);
    return;
  }
  new Page(session).start();
}

boot();
