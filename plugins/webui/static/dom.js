// DOM helpers shared by the page and its panels. Nothing here parses HTML: text goes in as text
// nodes and attributes through setAttribute, so a name or a summary can never become markup.

/** Build an element: el("button", {class: "x", onclick: fn}, "label", childNode, [more]). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

// control characters but tab and newline, and the bidi controls (U+202E turns a summary around)
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Text a peer wrote, with each control or bidi character shown as an escape (\x1b, \u202e),
 * as the hub's terminal and chat renderings show them: seen, and doing nothing. */
export function visible(text) {
  return String(text).replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
  }
}

/** Replace every child of node with the given children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const SURFACES = {
  mcp: "Claude Code", cli: "CLI", telegram: "Telegram", web: "Web", slack: "Slack",
  email: "Email",
};

/** A surface as people call it (a peer shape's `connector`, or one of its `surfaces`). */
export function surfaceLabel(connector) {
  return SURFACES[connector] ?? connector ?? "";
}

/** Where a peer is now: the surfaces it is live on ("CLI + Web"), else the one it joined on. */
export function surfacesOf(peer) {
  return peer.surfaces?.length ? peer.surfaces.map(surfaceLabel).join(" + ")
    : surfaceLabel(peer.connector);
}

const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});

/** A unix time in seconds as a short local time; the date too when it is not today. */
export function shortTime(seconds) {
  const when = new Date(seconds * 1000);
  const today = new Date().toDateString() === when.toDateString();
  return (today ? timeOnly : dayAndTime).format(when);
}

/** Full local date and time, for tooltips. */
export function longTime(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

/** A byte count for people: 512 B, 3.4 KB, 1.2 MB. */
export function byteSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Base64 of an ArrayBuffer, in slices so a large file does not overflow the call stack. */
export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** Bytes of a base64 string. */
export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Offer bytes to the person as a download named `name`. */
export function download(bytes, name) {
  // always as bytes to save, whatever type the sender claimed: never something to display
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
