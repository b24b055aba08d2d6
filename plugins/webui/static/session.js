// The page's half of its session. The hub splits a browser's session token in two: one half is
// an HttpOnly cookie (no script reads it), this half lives in this origin's storage, and a
// request needs both. Browsers send cookies to every port of a host; storage stays with this
// origin, so a server on another port that gets the cookie still cannot act as the member.

const KEY = "meshhub.session";
const PROTOCOL = "meshhub.v1";

/** After signing in the hub sends the page to `/#session=<half>`: keep it, clear the address. */
export function adoptFromAddress() {
  const found = /(?:^#|&)session=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (!found) return;
  localStorage.setItem(KEY, found[1]);
  history.replaceState(null, "", location.pathname + location.search);
}

export function forgetSession() {
  localStorage.removeItem(KEY);
}

function pageHalf() {
  return localStorage.getItem(KEY) ?? "";
}

/** fetch() for the page's own routes, with its half of the session. */
export function sessionFetch(path, options = {}) {
  return fetch(path, {
    cache: "no-store", ...options,
    headers: { ...(options.headers ?? {}), "X-Meshhub-Session": pageHalf() },
  });
}

/** The WebSocket subprotocols that carry the page's half to `/web/ws`. */
export function socketProtocols() {
  return [PROTOCOL, `session.${pageHalf()}`];
}
