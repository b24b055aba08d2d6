// Approvals waiting for you: one click answers (approve, deny or the asker's own options),
// with an optional reason the asker sees. A request settled anywhere (another tab, Telegram,
// the terminal, its expiry) leaves the waiting list at once, from the hub's `approval` event,
// and shows under "Answered" with how it was settled. Also lists what you asked.

export const title = "Approvals";

const ANSWERED_SHOWN = 20;

export async function mount(element, api) {
  const { el } = api;
  const pending = el("ul", { class: "card-list", "data-testid": "approvals-pending" });
  const answered = el("ul", { class: "card-list", "data-testid": "approvals-answered" });
  const asked = el("ul", { class: "card-list", "data-testid": "approvals-asked" });
  element.replaceChildren(
    el("h2", {}, "Waiting for your answer"), pending,
    el("h2", {}, "Answered"), answered,
    el("h2", {}, "You asked"), asked);

  const byId = (list, id) => [...list.children].find((item) => item.dataset.id === id);

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
          settled(await api.call("approval_answer", {
            id: approval.id, answer: option, reason: reason.value.trim() || null,
          }));
        } catch (error) {
          api.toast(error.message);
          await refresh();
        }
      },
    }, option));
    return el("li", { class: "card", "data-testid": "approval", "data-id": approval.id },
      el("p", { class: "card-title" }, approval.question),
      el("p", { class: "muted" }, `asked by ${approval.asker}`),
      reason,
      el("div", { class: "button-row" }, buttons));
  }

  function settledCard(approval) {
    return el("li", { class: "card", "data-testid": "approval-settled", "data-id": approval.id },
      el("p", { class: "card-title" }, approval.question),
      el("p", { class: "muted" }, `asked by ${approval.asker}`),
      el("p", { "data-testid": "approval-label" }, approval.label),
      approval.reason ? el("p", {}, `Reason: ${approval.reason}`) : null);
  }

  function askedCard(approval) {
    return el("li", { class: "card", "data-testid": "approval-asked", "data-id": approval.id },
      el("p", { class: "card-title" }, approval.question),
      el("p", { class: "muted" }, approval.label),
      approval.reason ? el("p", {}, `Reason: ${approval.reason}`) : null);
  }

  const noneWaiting = () =>
    el("li", { class: "muted", "data-testid": "approvals-none" }, "Nothing waits for you.");
  const noneAnswered = () => el("li", { class: "muted" }, "Nothing answered yet.");

  /** One approval left the pending state, here or on any other surface. */
  function settled(approval) {
    const waiting = byId(pending, approval.id);
    waiting?.remove();
    if (!pending.querySelector("[data-testid=approval]")) pending.replaceChildren(noneWaiting());
    if (waiting || approval.approvers?.includes(api.me.name)) {
      byId(answered, approval.id)?.remove();
      answered.querySelector(":scope > .muted")?.remove();
      answered.prepend(settledCard(approval));
      while (answered.children.length > ANSWERED_SHOWN) answered.lastElementChild.remove();
    }
    byId(asked, approval.id)?.replaceWith(askedCard(approval));
  }

  async function refresh() {
    const [mine, done, theirs] = await Promise.all([
      api.call("approvals", { role: "approver", state: "pending" }),
      api.call("approvals", { role: "approver", state: "settled", limit: ANSWERED_SHOWN }),
      api.call("approvals", { role: "asker", state: "all", limit: 20 }),
    ]);
    pending.replaceChildren(...(mine.length ? mine.map(card) : [noneWaiting()]));
    answered.replaceChildren(...(done.length ? done.map(settledCard) : [noneAnswered()]));
    asked.replaceChildren(...(theirs.length ? theirs.map(askedCard)
      : [el("li", { class: "muted" }, "You have not asked for any approval.")]));
  }

  api.on("message", (message) => {
    if (message.kind === "approval" || message.kind === "approval_answer") refresh();
  });
  api.on("approval", (approval) => {
    if (approval.state !== "pending") settled(approval);
  });
  api.on("reconnect", refresh);
  await refresh();
}
