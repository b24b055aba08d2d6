export const title = "files";
export function mount(element) {
  element.textContent = "";
}
