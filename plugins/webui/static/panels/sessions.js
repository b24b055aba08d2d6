export const title = "sessions";
export function mount(element) {
  element.textContent = "";
}
