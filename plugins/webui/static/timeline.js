// The message list of the open conversation: the newest page first, older pages as the person
// scrolls up, live messages appended, reactions, reply counts and read receipts kept current.

import { el, fill } from "./dom.js";
import { messageNode, paintReactions, paintReceipt, paintReplies } from "./message.js";

const PAGE = 50;
const NEAR_TOP_PX = 300;
const NEAR_BOTTOM_PX = 120;
const RECEIPTS_SHOWN = 10;

/** Kinds that change something already shown rather than being shown themselves. */
export const SILENT_KINDS = new Set(["reaction"]);

export class Timeline {
  constructor(container, page) {
    this.container = container;
    this.page = page;
    this.list = el("div", { class: "message-list" });
    this.top = el("div", { class: "list-top", "data-testid": "history-top" });
    container.append(this.top, this.list);
    this.view = null;
    this.ids = new Set();
    this.more = false;
    this.loading = null;
    this.arriving = null;
    this.generation = 0;
    this.pinned = true; // the person is at the bottom: new messages keep it in view
    this.scrollFrame = null;
    container.addEventListener("scroll", () => {
      // while a follow is pending, the list has grown under a scroll the page made itself
      // (scroll events come a frame late): that is no sign the person moved away
      if (!this.scrollFrame) this.pinned = this.atBottom();
      this.scrolled();
    }, { passive: true });
  }

  /** Open a view ("#name", "dm:<name>" or "all") at its newest messages. */
  async show(view) {
    this.view = view;
    this.generation += 1;
    const generation = this.generation;
    this.ids.clear();
    this.more = false;
    this.arriving = [];
    fill(this.list);
    fill(this.top, el("p", { class: "muted" }, "Loading…"));
    const page = await this.fetch({ limit: PAGE });
    if (generation !== this.generation) return;
    this.more = page.more;
    this.list.append(...this.nodes(page));
    this.paintTop();
    this.container.scrollTop = this.container.scrollHeight;
    this.pinned = true;
    this.afterRender(page.messages);
    this.fillScreen();
    const arrived = this.arriving;
    this.arriving = null;
    for (const [message, html] of arrived) this.add(message, html);
  }

  async fetch(params) {
    const query = { ...params, top_level_only: true };
    if (this.view !== "all") query.conversation = this.view;
    const { result, html } = await this.page.hub.callWithHtml("history", query);
    for (const [root, count] of Object.entries(result.replies ?? {})) {
      this.page.replies.set(root, count);
    }
    const messages = result.messages.filter((m) => !SILENT_KINDS.has(m.kind));
    this.page.markRead(result.messages.filter((m) => SILENT_KINDS.has(m.kind)));
    return { messages, html, more: result.more };
  }

  nodes({ messages, html }) {
    const fresh = messages.filter((m) => !this.ids.has(m.id));
    for (const m of fresh) this.ids.add(m.id);
    return fresh.map((m) => messageNode(m, html[m.id], this.page));
  }

  paintTop() {
    fill(this.top, this.more
      ? el("button", {
        type: "button", class: "load-older", "data-testid": "load-older",
        onclick: () => this.scrolled(true),
      }, "Older messages")
      : el("p", { class: "muted", "data-testid": "history-start" }, this.ids.size
        ? "This is the start of the conversation."
        : "No messages here yet. Say hello!"));
  }

  scrolled(asked = false) {
    if (this.more && !this.loading && (asked || this.container.scrollTop < NEAR_TOP_PX)) {
      this.loading = this.loadOlder().finally(() => { this.loading = null; });
    }
  }

  /** A page of short messages may not fill a tall screen, and then nothing scrolls to ask
   * for more: ask at once. */
  fillScreen() {
    const c = this.container;
    if (this.more && c.scrollHeight <= c.clientHeight + NEAR_TOP_PX) this.scrolled(true);
  }

  /** Prepend the page before the oldest message shown, keeping what the person looks at still. */
  async loadOlder() {
    const oldest = this.list.querySelector(".message")?.dataset.id;
    if (!oldest) return;
    const generation = this.generation;
    const page = await this.fetch({ before: oldest, limit: PAGE });
    if (generation !== this.generation) return;
    const height = this.container.scrollHeight;
    this.list.prepend(...this.nodes(page));
    this.container.scrollTop += this.container.scrollHeight - height;
    this.more = page.more;
    this.paintTop();
    this.afterRender(page.messages);
    setTimeout(() => this.fillScreen(), 0); // once this load has finished
  }

  /** Fetch whatever arrived after the newest message shown (my own sends, a missed gap). */
  async catchUp() {
    const newest = [...this.list.querySelectorAll(".message")].at(-1)?.dataset.id;
    const generation = this.generation;
    const page = await this.fetch(newest ? { after: newest, limit: 500 } : { limit: PAGE });
    if (generation !== this.generation) return;
    this.appendAll(page);
  }

  /** A pushed message of this view. A new one is appended (following the bottom if the person
   * was there); an older one (a backlog after a reconnect, a message held by priority) goes in
   * its place, or is left to the history pages when it is older than anything shown. */
  add(message, html) {
    if (this.arriving) {
      this.arriving.push([message, html]); // the first page is on its way
      return;
    }
    if (this.ids.has(message.id)) return;
    // the list holds message nodes only, in id order: its ends say where this one goes
    const newest = this.list.lastElementChild?.dataset.id;
    if (!newest || message.id > newest) {
      this.appendAll({ messages: [message], html: { [message.id]: html } }, { live: true });
      return;
    }
    if (this.more && message.id < this.list.firstElementChild.dataset.id) return;
    const after = [...this.list.children].find((node) => node.dataset.id > message.id);
    this.ids.add(message.id);
    this.list.insertBefore(messageNode(message, html, this.page), after ?? null);
    this.afterRender([message], { live: true });
  }

  appendAll(page, { live = false } = {}) {
    const nodes = this.nodes(page);
    if (!nodes.length) return;
    this.list.append(...nodes);
    if (this.top.querySelector("[data-testid=history-start]")) this.paintTop();
    if (this.pinned) this.followSoon();
    this.afterRender(page.messages, { live });
  }

  /** Scroll to the newest message at the next frame, once for a burst: reading the layout
   * here, on every arriving message, would make the browser lay the list out each time. */
  followSoon() {
    if (this.scrollFrame) return;
    this.scrollFrame = requestAnimationFrame(() => {
      this.scrollFrame = null;
      this.container.scrollTop = this.container.scrollHeight;
    });
  }

  atBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < NEAR_BOTTOM_PX;
  }

  /** Reactions, read marks and receipts of messages just shown. A message that has just
   * arrived has no reactions yet: asking the hub for them would cost a call per message. */
  afterRender(messages, { live = false } = {}) {
    if (!messages.length) return;
    if (!live) this.page.loadReactions(messages.map((m) => m.id));
    this.page.markRead(messages);
    this.refreshReceipts(messages.filter((m) => m.from === this.page.me.name).slice(-RECEIPTS_SHOWN));
  }

  async refreshReceipts(messages) {
    for (const message of messages) {
      const status = await this.page.hub.call("message_status", { id: message.id })
        .catch(() => null);
      const node = this.node(message.id);
      if (status && node) paintReceipt(node, status);
    }
  }

  /** My newest messages again: their receipts move as people read them. */
  refreshRecentReceipts() {
    const mine = [...this.list.querySelectorAll(".message.mine")].slice(-RECEIPTS_SHOWN)
      .map((node) => ({ id: node.dataset.id }));
    return this.refreshReceipts(mine);
  }

  /** The messages on screen, as far as marking them read needs (id and sender). */
  shownMessages() {
    return [...this.list.querySelectorAll(".message")]
      .map((node) => ({ id: node.dataset.id, from: node.dataset.from }));
  }

  node(id) {
    return this.list.querySelector(`.message[data-id="${CSS.escape(id)}"]`);
  }

  repaintReactions(id) {
    const node = this.node(id);
    if (node) paintReactions(node, id, this.page);
  }

  repaintReplies(root) {
    const node = this.node(root);
    if (node) paintReplies(node, this.page.replies.get(root) ?? 0);
  }
}
