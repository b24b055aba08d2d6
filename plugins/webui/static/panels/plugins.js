export const title = "plugins";
export function mount(element) {
  element.textContent = "";
}
