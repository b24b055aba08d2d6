// Proposals you made or may vote on: each with its tallies and votes (names and reasons), and
// for an open one you may vote on, Approve / Reject with a reason. A form puts a new proposal
// to an electorate (#conversation, @group or names, comma-separated). A vote or a resolution
// made anywhere (Telegram, a Claude Code session, the command line, the deadline) arrives as
// the hub's `record` event and shows at once. Titles, reasons and names are peers' text:
// shown as text only. Verifications are left to the message view.

export const title = "Proposals";

export async function mount(element, api) {
  const { el } = api;
  const shown = new Map(); // id -> the proposal_get shape
  let me = null;
  const list = el("ul", { class: "card-list", "data-testid": "proposals-list" });
  const input = (attrs) => el("input", { type: "text", ...attrs });
  const titleInput = input({ placeholder: "what is proposed", "aria-label": "Title",
    "data-testid": "proposal-title", maxlength: 200, required: true });
  const toInput = input({ placeholder: "#conversation, @group or names", "aria-label": "To",
    "data-testid": "proposal-to", required: true });
  const thresholdInput = el("input", { type: "number", min: 1, value: 1,
    "aria-label": "Approvals needed", "data-testid": "proposal-threshold" });
  const deadlineInput = input({ placeholder: "deadline (optional), e.g. 2h",
    "aria-label": "Deadline", "data-testid": "proposal-deadline", maxlength: 64 });
  const description = el("textarea", { rows: 3, placeholder: "details (optional)",
    "aria-label": "Description", "data-testid": "proposal-description", maxlength: 4000 });
  const form = el("form", {
    class: "proposal-form",
    onsubmit: async (event) => {
      event.preventDefault();
      const to = toInput.value.split(",").map((t) => t.trim()).filter(Boolean);
      try {
        show(await api.call("propose", {
          title: titleInput.value.trim(), to, threshold: Number(thresholdInput.value),
          deadline: deadlineInput.value.trim() || null, description: description.value,
        }));
        titleInput.value = description.value = deadlineInput.value = "";
      } catch (error) {
        api.toast(error.message);
      }
    },
  }, titleInput, toInput, thresholdInput, deadlineInput, description,
  el("div", { class: "button-row" },
    el("button", { type: "submit", class: "primary", "data-testid": "proposal-create" },
      "Propose")));
  element.replaceChildren(el("h2", {}, "Propose"), form, el("h2", {}, "Proposals"), list);

  function votes(proposal) {
    return el("ul", { class: "votes" }, ...proposal.votes.map((v) => el("li",
      { "data-testid": "proposal-vote" }, `${v.voter}: ${v.vote}${v.reason ? ` (${v.reason})` : ""}`)));
  }

  function ballot(proposal) {
    const reason = el("input", { type: "text", class: "reason", placeholder: "reason",
      "aria-label": "Reason", "data-testid": "proposal-reason", maxlength: 1000 });
    const buttons = ["approve", "reject"].map((choice) => el("button", {
      type: "button", class: choice === "approve" ? "primary" : "",
      "data-testid": `proposal-${choice}`,
      onclick: async () => {
        for (const b of buttons) b.disabled = true;
        try {
          show(await api.call("vote", { id: proposal.id, vote: choice, reason: reason.value }));
        } catch (error) {
          api.toast(error.message);
          for (const b of buttons) b.disabled = false;
        }
      },
    }, choice === "approve" ? "Approve" : "Reject"));
    return el("div", { class: "button-row" }, reason, ...buttons);
  }

  function card(proposal) {
    const { approve, reject } = proposal.tally;
    const deadline = proposal.deadline
      ? ` · until ${new Date(proposal.deadline * 1000).toLocaleString()}` : "";
    const voting = proposal.state === "open" && proposal.electorate.includes(me);
    return el("li", { class: "card", "data-testid": "proposal", "data-id": proposal.id },
      el("p", { class: "card-title" }, proposal.title),
      el("p", {}, proposal.description),
      el("p", { class: "muted", "data-testid": "proposal-state" },
        `${proposal.state} · ${approve} approve, ${reject} reject, ${proposal.threshold} needed`
        + ` · by ${proposal.proposer}${deadline}`),
      votes(proposal), ...(voting ? [ballot(proposal)] : []));
  }

  function render() {
    const sorted = [...shown.values()].sort((a, b) => b.opened_at - a.opened_at);
    list.replaceChildren(...(sorted.length ? sorted.map(card)
      : [el("li", { class: "muted", "data-testid": "proposals-none" }, "No proposals yet.")]));
  }

  function show(proposal) {
    shown.set(proposal.id, proposal);
    render();
  }

  async function refresh() {
    me = (await api.call("whoami", {})).name;
    shown.clear();
    for (const proposal of await api.call("proposals", {})) shown.set(proposal.id, proposal);
    render();
  }

  api.on("record", async (event) => {
    if (event.collection !== "proposals" || event.op !== "put") return;
    try {
      show(await api.call("proposal_get", { id: event.key }));
    } catch (error) {
      api.toast(error.message);
    }
  });
  api.on("reconnect", refresh);
  await refresh();
}
