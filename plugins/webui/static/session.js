// The page's half of its session. The hub splits a browser's session token in two: one half is
// an HttpOnly cookie (no script reads it), this half lives in this origin's storage (put there
// by signin.js, from the answer to a sign-in link), and a request needs both. Browsers send
// cookies to every port of a host; storage stays with this origin, so a server on another port
// that gets the cookie still cannot act as the member.
//
// A tab keeps the half it started with: its requests, its socket and its sign-out are its own
// session's, even after another tab signed this browser in again (that tab reloads, below).

const KEY = "meshhub.session";
const PROTOCOL = "meshhub.v1";
const mine = localStorage.getItem(KEY) ?? "";

/** Forget this tab's half, unless another sign-in has already replaced it. */
export function forgetSession() {
  if (localStorage.getItem(KEY) === mine) localStorage.removeItem(KEY);
}

/** Call `fn` when this browser is signed in again from another tab. */
export function onSessionReplaced(fn) {
  addEventListener("storage", (event) => {
    if (event.key === KEY && event.newValue && event.newValue !== mine) fn();
  });
}

/** fetch() for the page's own routes, with this tab's half of the session. */
export function sessionFetch(path, options = {}) {
  return fetch(path, {
    cache: "no-store", ...options,
    headers: { ...(options.headers ?? {}), "X-Meshhub-Session": mine },
  });
}

/** The WebSocket subprotocols that carry this tab's half to `/web/ws`. */
export function socketProtocols() {
  return [PROTOCOL, `session.${mine}`];
}
