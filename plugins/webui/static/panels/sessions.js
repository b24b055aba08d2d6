// Your web sessions (each signed-in browser): when each began and ends, revoke any of them,
// or sign this one out.

export const title = "Sessions";

export async function mount(element, api) {
  const { el } = api;
  const list = el("ul", { class: "card-list", "data-testid": "sessions-list" });
  element.replaceChildren(
    el("p", {}, "Each browser you signed in with a link is a session. Revoke one you no longer use."),
    list,
    el("button", {
      type: "button", class: "danger", "data-testid": "sign-out",
      onclick: () => api.signOut(),
    }, "Sign out of this browser"));

  const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "never");

  async function revoke(session) {
    try {
      await api.call("web_session_revoke", { id: session.id });
    } catch (error) {
      api.toast(error.message);
    }
    if (!session.current) await refresh();
  }

  async function refresh() {
    const sessions = await api.call("web_sessions");
    list.replaceChildren(...sessions.map((session) => el("li", {
      class: "card", "data-testid": "session", "data-id": session.id,
    },
    el("p", { class: "card-title" }, session.label || "browser",
      session.current ? el("span", { class: "pill" }, "this browser") : null),
    el("p", { class: "muted" },
      `signed in ${when(session.created_at)}, ends ${when(session.expires_at)}`),
    el("button", {
      type: "button", "data-testid": "session-revoke", onclick: () => revoke(session),
    }, session.current ? "Revoke (signs you out)" : "Revoke"))));
  }

  api.on("reconnect", refresh);
  await refresh();
}
