export const title = "approvals";
export function mount(element) {
  element.textContent = "";
}
