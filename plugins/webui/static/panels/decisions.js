// The decisions board: the decisions you can see, under their category; post one (posting to
// a key that exists updates it), open a decision's history, revoke one with a reason. Changes
// made anywhere arrive as the hub's `record` events and the board is read again. Values,
// rationales and reasons are peers' text: shown as text only.

export const title = "Decisions";

export async function mount(element, api) {
  const { el } = api;
  const field = (name, placeholder, attrs = {}) => el("input", {
    type: "text", placeholder, "aria-label": placeholder, "data-testid": `decision-${name}`,
    ...attrs,
  });
  const key = field("key", "key, e.g. db/engine", { maxlength: 128, required: true });
  const value = el("textarea", { rows: 2, placeholder: "the decision", "aria-label": "Value",
    "data-testid": "decision-value", maxlength: 4000, required: true });
  const rationale = el("textarea", { rows: 2, placeholder: "why", "aria-label": "Rationale",
    "data-testid": "decision-rationale", maxlength: 4000 });
  const category = field("category", "category, e.g. architecture", { maxlength: 64 });
  const conversation = field("conversation", "#conversation (optional)", { maxlength: 200 });
  const postForm = el("form", { class: "decision-form", "data-testid": "decision-post" },
    key, value, rationale, category, conversation,
    el("div", { class: "button-row" }, el("button", { type: "submit", class: "primary" },
      "Post")));
  postForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.call("decision_post", { key: key.value.trim(), value: value.value,
        rationale: rationale.value, category: category.value.trim() || "general",
        conversation: conversation.value.trim() || null });
      value.value = "";
      rationale.value = "";
    } catch (error) {
      api.toast(error.message);
    }
    await refresh();
  });

  const revoked = el("input", { type: "checkbox", "data-testid": "decision-show-revoked" });
  revoked.addEventListener("change", refresh);
  const board = el("div", { "data-testid": "decision-board" });
  element.replaceChildren(el("h2", {}, "Post a decision"), postForm,
    el("h2", {}, "Decisions"), el("label", { class: "muted" }, revoked, " show revoked ones"),
    board);

  const when = (seconds) => new Date(seconds * 1000).toLocaleString();

  function historyItem(entry) {
    return entry.event === "revoked"
      ? el("li", { "data-testid": "decision-history-entry" },
        `revoked by ${entry.by} ${when(entry.at)}: ${entry.reason}`)
      : el("li", { "data-testid": "decision-history-entry" },
        `${entry.value} (by ${entry.by} ${when(entry.at)})`
        + (entry.rationale ? `: ${entry.rationale}` : ""));
  }

  async function showHistory(decision, into) {
    try {
      const got = await api.call("decision_get", { key: decision.key,
        conversation: decision.scope });
      into.replaceChildren(...got.history.map(historyItem));
    } catch (error) {
      api.toast(error.message);
    }
  }

  function card(decision) {
    const reason = el("input", { type: "text", placeholder: "why it no longer holds",
      "aria-label": "Reason", "data-testid": "decision-reason", maxlength: 4000 });
    const history = el("ol", { class: "decision-history", "data-testid": "decision-history" });
    const details = el("details", {}, el("summary", { class: "muted",
      "data-testid": "decision-history-open" }, "history"), history);
    details.addEventListener("toggle", () => {
      if (details.open) showHistory(decision, history);
    });
    const revoke = async () => {
      try {
        await api.call("decision_revoke", { key: decision.key, reason: reason.value,
          conversation: decision.scope });
      } catch (error) {
        api.toast(error.message);
      }
      await refresh();
    };
    return el("li", { class: decision.revoked ? "card decision revoked" : "card decision",
      "data-testid": "decision", "data-key": decision.key, "data-revoked": decision.revoked },
    el("p", { class: "card-title" }, decision.key, decision.scope ? ` (${decision.scope})` : ""),
    el("p", { "data-testid": "decision-value-text" }, decision.value),
    decision.rationale ? el("p", { class: "muted" }, decision.rationale) : null,
    el("p", { class: "muted" }, `by ${decision.author} ${when(decision.posted_at)}`
      + (decision.revoked ? ` · revoked by ${decision.revoked_by}: ${decision.revoke_reason}`
        : "")),
    details,
    decision.revoked ? null : el("div", { class: "button-row" }, reason,
      el("button", { type: "button", class: "danger", "data-testid": "decision-revoke",
        onclick: revoke }, "Revoke")));
  }

  async function refresh() {
    let found;
    try {
      found = (await api.call("decisions", { include_revoked: revoked.checked })).decisions;
    } catch (error) {
      api.toast(error.message);
      return;
    }
    const byCategory = new Map();
    for (const decision of found) {
      if (!byCategory.has(decision.category)) byCategory.set(decision.category, []);
      byCategory.get(decision.category).push(decision);
    }
    board.replaceChildren(...(found.length ? [...byCategory].map(([name, items]) =>
      el("section", { "data-testid": "decision-category", "data-category": name },
        el("h3", {}, name), el("ul", { class: "card-list" }, items.map(card))))
      : [el("p", { class: "muted", "data-testid": "decision-none" }, "No decisions yet.")]));
  }

  api.on("record", (event) => {
    if (event.collection === "decisions") refresh();
  });
  api.on("reconnect", refresh);
  await refresh();
}
