// Approvals waiting for you: one click answers (approve, deny or the asker's own options),
// with an optional reason the asker sees. Also lists what you asked and how it was answered.

export const title = "Approvals";

export async function mount(element, api) {
  const { el } = api;
  const pending = el("ul", { class: "card-list", "data-testid": "approvals-pending" });
  const asked = el("ul", { class: "card-list", "data-testid": "approvals-asked" });
  element.replaceChildren(
    el("h2", {}, "Waiting for your answer"), pending,
    el("h2", {}, "You asked"), asked);

  function card(approval) {
    const reason = el("input", {
      type: "text", class: "reason", placeholder: "reason (optional, shown to the asker)",
      "aria-label": "Reason", "data-testid": "approval-reason", maxlength: 500,
    });
    const buttons = approval.options.map((option, index) => el("button", {
      type: "button", class: index === 0 ? "primary" : "", "data-testid": "approval-answer",
      "data-answer": option,
      onclick: async () => {
        for (const b of buttons) b.disabled = true;
        try {
          await api.call("approval_answer", {
            id: approval.id, answer: option, reason: reason.value.trim() || null,
          });
        } catch (error) {
          api.toast(error.message);
        }
        await refresh();
      },
    }, option));
    return el("li", { class: "card", "data-testid": "approval", "data-id": approval.id },
      el("p", { class: "card-title" }, approval.question),
      el("p", { class: "muted" }, `asked by ${approval.asker}`),
      reason,
      el("div", { class: "button-row" }, buttons));
  }

  function answered(approval) {
    const state = approval.state === "pending"
      ? `waiting for ${approval.approver}`
      : `${approval.approver} answered ${approval.answer}`;
    return el("li", { class: "card", "data-testid": "approval-asked", "data-id": approval.id },
      el("p", { class: "card-title" }, approval.question),
      el("p", { class: "muted" }, state),
      approval.reason ? el("p", {}, `Reason: ${approval.reason}`) : null);
  }

  async function refresh() {
    const [mine, theirs] = await Promise.all([
      api.call("approvals", { role: "approver", state: "pending" }),
      api.call("approvals", { role: "asker", state: "all", limit: 20 }),
    ]);
    pending.replaceChildren(...(mine.length ? mine.map(card)
      : [el("li", { class: "muted", "data-testid": "approvals-none" }, "Nothing waits for you.")]));
    asked.replaceChildren(...(theirs.length ? theirs.map(answered)
      : [el("li", { class: "muted" }, "You have not asked for any approval.")]));
  }

  api.on("message", (message) => {
    if (message.kind === "approval" || message.kind === "approval_answer") refresh();
  });
  api.on("reconnect", refresh);
  await refresh();
}
