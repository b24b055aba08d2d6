// The thread panel: a root message and its replies, with a composer that replies in the
// thread. Threads are flat: every reply targets the root.

import { Composer } from "./composer.js";
import { el, fill } from "./dom.js";
import { messageNode, paintReactions } from "./message.js";
import { SILENT_KINDS } from "./timeline.js";

export class ThreadPanel {
  constructor(container, page) {
    this.container = container;
    this.page = page;
    this.root = null;
    this.ids = new Set();
    this.rootBox = el("div", { class: "thread-root", "data-testid": "thread-root" });
    this.replies = el("div", { class: "thread-replies", "data-testid": "thread-replies" });
    this.composer = new Composer({
      testid: "thread-composer", placeholder: "Reply in thread", whisper: false,
      suggest: page.suggest,
      send: ({ text }) => page.reply(this.root, text),
    });
    fill(container,
      el("header", { class: "pane-header" },
        el("h2", {}, "Thread"),
        el("button", {
          type: "button", class: "icon-button", "data-testid": "thread-close",
          "aria-label": "Close the thread", onclick: () => this.close(),
        }, "✕")),
      el("div", { class: "thread-scroll" }, this.rootBox, this.replies),
      this.composer.form);
  }

  get isOpen() {
    return this.root !== null;
  }

  async open(root) {
    this.root = root;
    this.ids.clear();
    fill(this.rootBox, el("p", { class: "muted" }, "Loading…"));
    fill(this.replies);
    this.page.showThread(true);
    await this.load();
    this.composer.focus();
  }

  async load() {
    const root = this.root;
    const { result, html } = await this.page.hub.callWithHtml("thread", { root });
    if (root !== this.root) return;
    this.ids.clear();
    fill(this.rootBox, messageNode(result.root, html[result.root.id], this.page, { inThread: true }));
    const replies = result.replies.filter((m) => !SILENT_KINDS.has(m.kind));
    fill(this.replies, replies.map((m) => this.replyNode(m, html[m.id])));
    this.page.replies.set(root, replies.length);
    this.page.repaintReplies(root);
    this.page.loadReactions([result.root.id, ...replies.map((m) => m.id)]);
    this.page.markRead([result.root, ...replies]);
    this.scrollDown();
  }

  replyNode(message, html) {
    this.ids.add(message.id);
    return messageNode(message, html, this.page, { inThread: true });
  }

  /** A pushed reply to the open thread. */
  add(message, html) {
    if (message.reply_to !== this.root || this.ids.has(message.id)) return;
    this.replies.append(this.replyNode(message, html));
    this.page.loadReactions([message.id]);
    this.scrollDown();
  }

  /** Point at one message of the open thread (the one a search found). */
  highlight(id) {
    for (const node of this.container.querySelectorAll(".message.found")) {
      node.classList.remove("found");
    }
    const node = this.container.querySelector(`.message[data-id="${CSS.escape(id)}"]`);
    node?.classList.add("found");
    node?.scrollIntoView({ block: "center" });
  }

  scrollDown() {
    const scroll = this.container.querySelector(".thread-scroll");
    scroll.scrollTop = scroll.scrollHeight;
  }

  repaintReactions(id) {
    for (const node of this.container.querySelectorAll(`.message[data-id="${CSS.escape(id)}"]`)) {
      paintReactions(node, id, this.page);
    }
  }

  close() {
    if (!this.isOpen) return;
    this.root = null;
    this.page.showThread(false);
  }
}
