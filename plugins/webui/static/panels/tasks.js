// Tasks: the tasks you can see, filtered by status or to your own; create one (for a peer, a
// @group or nobody yet), claim an open one, block one with a reason, complete one with its
// result. Changes made anywhere arrive as the hub's `record` events and the list is read
// again. Titles, descriptions, reasons and results are peers' text: shown as text only.

export const title = "Tasks";

const STATUSES = ["open", "claimed", "in_progress", "blocked", "done", "cancelled"];
const LIVE = new Set(["claimed", "in_progress", "blocked"]);

export async function mount(element, api) {
  const { el } = api;
  const titleInput = el("input", {
    type: "text", placeholder: "what is to be done", "aria-label": "Title",
    "data-testid": "task-title", maxlength: 200, required: true,
  });
  const description = el("textarea", {
    rows: 2, placeholder: "details", "aria-label": "Description",
    "data-testid": "task-description", maxlength: 8000,
  });
  const assignee = el("input", {
    type: "text", placeholder: "assignee: a peer or @group (optional)",
    "aria-label": "Assignee", "data-testid": "task-assignee", maxlength: 200,
  });
  const createForm = el("form", { class: "task-form", "data-testid": "task-create" },
    titleInput, description, assignee,
    el("div", { class: "button-row" }, el("button", { type: "submit", class: "primary" },
      "Create")));
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.call("task_create", { title: titleInput.value,
        description: description.value, assignee: assignee.value.trim() || null });
      titleInput.value = "";
      description.value = "";
      assignee.value = "";
    } catch (error) {
      api.toast(error.message);
    }
    await refresh();
  });

  const status = el("select", { "aria-label": "Status", "data-testid": "task-filter-status" },
    el("option", { value: "" }, "every status"),
    STATUSES.map((s) => el("option", { value: s }, s.replace("_", " "))));
  const mine = el("input", { type: "checkbox", "data-testid": "task-filter-mine" });
  status.addEventListener("change", refresh);
  mine.addEventListener("change", refresh);
  const filters = el("div", { class: "button-row" }, status,
    el("label", { class: "muted" }, mine, " mine only"));
  const more = el("p", { class: "muted", "data-testid": "task-more", hidden: true },
    "Only the newest 50 are shown (tasks with after pages on).");
  const list = el("ul", { class: "card-list", "data-testid": "task-list" });
  element.replaceChildren(el("h2", {}, "New task"), createForm, el("h2", {}, "Tasks"), filters,
    more, list);

  async function act(action, params) {
    try {
      await api.call(action, params);
    } catch (error) {
      api.toast(error.message);
    }
    await refresh();
  }

  function card(task) {
    const note = el("input", {
      type: "text", placeholder: "reason or result", "aria-label": "Reason or result",
      "data-testid": "task-note", maxlength: 2000,
    });
    const buttons = [];
    if (task.status === "open") {
      buttons.push(el("button", { type: "button", class: "primary", "data-testid": "task-claim",
        onclick: () => act("task_claim", { id: task.id }) }, "Claim"));
    }
    if (task.status === "claimed" || task.status === "in_progress") {
      buttons.push(el("button", { type: "button", "data-testid": "task-block",
        onclick: () => act("task_block", { id: task.id, reason: note.value }) }, "Block"));
    }
    if (LIVE.has(task.status)) {
      buttons.push(el("button", { type: "button", "data-testid": "task-complete",
        onclick: () => act("task_complete", { id: task.id, result: note.value }) },
      "Complete"));
    }
    const who = [`by ${task.created_by}`, task.assignee ? `for ${task.assignee}` : null,
      task.claimed_by ? `held by ${task.claimed_by}` : null, task.conversation]
      .filter(Boolean).join(" · ");
    return el("li", { class: "card task", "data-testid": "task", "data-id": task.id,
      "data-status": task.status },
    el("p", { class: "card-title" }, el("span", { class: "pill", "data-testid": "task-status" },
      task.status.replace("_", " ")), " ", el("span", { "data-testid": "task-title-text" },
      task.title)),
    task.description ? el("p", { class: "memory-text" }, task.description) : null,
    task.status === "blocked" && task.blocked_reason
      ? el("p", { "data-testid": "task-reason" }, `blocked: ${task.blocked_reason}`) : null,
    task.status === "done" && task.result
      ? el("p", { "data-testid": "task-result" }, `result: ${task.result}`) : null,
    el("p", { class: "muted" }, who),
    buttons.length ? el("div", { class: "button-row" }, LIVE.has(task.status) ? note : null,
      buttons) : null);
  }

  async function refresh() {
    let found;
    try {
      found = await api.call("tasks", { status: status.value || null, mine: mine.checked });
    } catch (error) {
      api.toast(error.message);
      return;
    }
    more.hidden = !found.more;
    list.replaceChildren(...(found.tasks.length ? found.tasks.map(card)
      : [el("li", { class: "muted", "data-testid": "task-none" }, "No tasks.")]));
  }

  api.on("record", (event) => {
    if (event.collection === "tasks") refresh();
  });
  api.on("reconnect", refresh);
  await refresh();
}
