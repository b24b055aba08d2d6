// The hub's plugins as a table: version, source, status, what each registered, and the error
// of a plugin that failed to load or start.

export const title = "Plugins";

export async function mount(element, api) {
  const { el } = api;
  const body = el("tbody");
  element.replaceChildren(
    el("div", { class: "table-wrap" },
      el("table", { class: "table", "data-testid": "plugins-table" },
        el("thead", {}, el("tr", {},
          ["Plugin", "Version", "Source", "Status", "Registered"].map((h) => el("th", {}, h)))),
        body)));

  function registered(plugin) {
    return Object.entries(plugin.registered ?? {})
      .filter(([, names]) => names.length)
      .map(([kind, names]) => `${kind}: ${names.join(", ")}`).join("; ");
  }

  const plugins = await api.call("plugins_list");
  body.replaceChildren(...plugins.map((plugin) => el("tr", {
    "data-testid": "plugin-row", "data-name": plugin.name, "data-status": plugin.status,
    class: plugin.status === "failed" ? "failed" : "",
  },
  el("td", {}, plugin.name),
  el("td", {}, plugin.version ?? ""),
  el("td", {}, plugin.source ?? ""),
  el("td", {}, el("span", { class: `pill pill-${plugin.status}` }, plugin.status),
    plugin.error ? el("p", { class: "error", "data-testid": "plugin-error" }, plugin.error) : null),
  el("td", { class: "small" }, registered(plugin)))));
}
