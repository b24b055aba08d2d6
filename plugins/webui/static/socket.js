// The page's one WebSocket to the hub: calls matched to results by id, pushed messages acked
// once they are shown, presence and approval events, and reconnecting by itself after a hub
// restart.

import { sessionFetch, socketProtocols } from "./session.js";

const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 5000;
const KEEPALIVE_MS = 25_000;
/** Close codes after which reconnecting cannot help: the session ended or the member left. */
const SIGNED_OUT_CODES = new Set([4001, 4003]);

/** An error the hub answered a call with; `code` is for programs, `message` for people. */
export class HubError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/**
 * Events (subscribe with on(name, fn), which returns an unsubscribe function):
 * - "welcome" (frame): connected; `reconnected` tells a first connect from a later one
 * - "message" ({message, html}): a pushed message; it is acked after every handler ran
 * - "presence" (frame): another peer's presence changed
 * - "approval" (approval): an approval this peer asked or must answer was settled (its view)
 * - "record" (frame): a feature's document this peer may see changed (shared state, ...)
 * - "reconnecting" (): the socket closed and a new one is on its way
 * - "signedout" (code): the session ended; nothing will reconnect
 */
export class HubSocket {
  constructor(url) {
    this.url = url;
    this.handlers = new Map();
    this.pending = new Map();
    this.waiting = [];
    this.nextId = 1;
    this.retryMs = FIRST_RETRY_MS;
    this.connectedOnce = false;
    this.stopped = false;
    this.ws = null;
    this.ready = false;
    this.toAck = [];
    this.keepalive = null;
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name).delete(fn);
  }

  emit(name, value) {
    for (const fn of this.handlers.get(name) ?? []) {
      try {
        fn(value);
      } catch (error) {
        // one broken handler (a panel, say) must not stop the others or the acks
        reportError(error);
      }
    }
  }

  open() {
    const ws = new WebSocket(this.url, socketProtocols());
    this.ws = ws;
    ws.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    ws.addEventListener("close", (event) => this.closed(ws, event.code));
  }

  receive(frame) {
    switch (frame.type) {
      case "welcome":
        this.ready = true;
        this.retryMs = FIRST_RETRY_MS;
        this.startKeepalive();
        this.emit("welcome", { ...frame, reconnected: this.connectedOnce });
        this.connectedOnce = true;
        for (const waiter of this.waiting.splice(0)) waiter.send();
        break;
      case "result":
      case "error":
        this.settle(frame);
        break;
      case "message":
        this.emit("message", { message: frame.message, html: frame.html });
        this.ack(frame.message.id);
        break;
      case "event":
        if (frame.event === "presence") this.emit("presence", frame);
        else if (frame.event === "approval") this.emit("approval", frame.approval);
        else if (frame.event === "record") this.emit("record", frame);
        break;
      default:
        break;
    }
  }

  settle(frame) {
    const call = this.pending.get(frame.id);
    if (!call) return;
    this.pending.delete(frame.id);
    if (frame.type === "result") call.resolve({ result: frame.result, html: frame.html ?? {} });
    else call.reject(new HubError(frame.code, frame.message, frame.details));
  }

  /** Acks go out together once the current batch of frames has been handled. */
  ack(id) {
    this.toAck.push(id);
    if (this.toAck.length > 1) return;
    setTimeout(() => {
      const ids = this.toAck.splice(0);
      if (this.ready) this.ws.send(JSON.stringify({ type: "ack", ids }));
    }, 0);
  }

  startKeepalive() {
    clearInterval(this.keepalive);
    this.keepalive = setInterval(() => {
      if (this.ready) this.ws.send(JSON.stringify({ type: "ping", id: "keepalive" }));
    }, KEEPALIVE_MS);
  }

  /** Run an action; resolves to {result, html} (html: message id -> rendered body). */
  callWithHtml(action, params = {}) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const send = () => {
        this.pending.set(id, { resolve, reject });
        this.ws.send(JSON.stringify({ type: "call", id, action, params }));
      };
      if (this.ready) send();
      else if (this.stopped) reject(new HubError("signed_out", "you are signed out"));
      else this.waiting.push({ send, reject });
    });
  }

  /** Run an action; resolves to its result. */
  async call(action, params = {}) {
    return (await this.callWithHtml(action, params)).result;
  }

  closed(ws, code) {
    if (ws !== this.ws) return;
    this.ready = false;
    clearInterval(this.keepalive);
    for (const call of this.pending.values()) {
      call.reject(new HubError("disconnected", "the connection to the hub was lost; try again"));
    }
    this.pending.clear();
    if (this.stopped) return;
    if (SIGNED_OUT_CODES.has(code)) {
      this.stop();
      this.emit("signedout", code);
      return;
    }
    this.emit("reconnecting");
    this.retry();
  }

  /** Wait, then ask whether the session still stands (a socket refused at the upgrade only
   * says 1006), and open a new socket if it does. */
  retry() {
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, LAST_RETRY_MS);
    setTimeout(async () => {
      if (this.stopped) return;
      let session = null;
      try {
        const response = await sessionFetch("/web/api/session");
        if (response.ok) session = await response.json();
      } catch {
        session = null;
      }
      if (session && !session.peer) {
        this.stop();
        this.emit("signedout", 4001);
      } else if (session) {
        this.open();
      } else {
        this.retry();
      }
    }, delay);
  }

  stop() {
    this.stopped = true;
    this.ready = false;
    clearInterval(this.keepalive);
    for (const waiter of this.waiting.splice(0)) {
      waiter.reject(new HubError("signed_out", "you are signed out"));
    }
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "signed out");
  }
}
