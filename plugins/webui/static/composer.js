// Writing a message: Enter sends, Shift+Enter starts a new line, @name and #conversation
// complete from what the hub knows, and a whisper limits who may read it.

import { el, fill, visible } from "./dom.js";

const TOKEN_BEFORE_CARET = /(^|[\s(])([@#])([\w.\-/]*)$/;
const MAX_SUGGESTIONS = 8;

export class Composer {
  /**
   * `options`: `testid` prefix, `placeholder`, `whisper` (offer whispering), `suggest(sigil,
   * prefix)` -> [{value, label, detail}], `send({text, whisper})` -> Promise (rejects with an
   * error whose message is shown; the text is kept then).
   */
  constructor(options) {
    this.options = options;
    const id = options.testid;
    this.input = el("textarea", {
      class: "composer-input", rows: 1, "data-testid": `${id}-input`,
      placeholder: options.placeholder, "aria-label": options.placeholder,
      onkeydown: (event) => this.keydown(event),
      oninput: () => this.changed(),
      onblur: () => setTimeout(() => this.closeSuggestions(), 150),
    });
    this.suggestions = el("ul", {
      class: "suggestions", role: "listbox", "data-testid": "autocomplete", hidden: true,
    });
    this.whisperInput = el("input", {
      type: "text", class: "whisper-input", "data-testid": `${id}-whisper-input`, hidden: true,
      placeholder: "whisper to: names, separated by commas", "aria-label": "Whisper to",
    });
    this.whisperToggle = options.whisper ? el("button", {
      type: "button", class: "chip-toggle", "data-testid": `${id}-whisper-toggle`,
      "aria-pressed": "false", title: "Only the people you name will see this message",
      onclick: () => this.toggleWhisper(),
    }, "Whisper") : null;
    this.error = el("p", { class: "composer-error", role: "alert", "data-testid": `${id}-error` });
    this.button = el("button", {
      type: "submit", class: "send-button", "data-testid": `${id}-send`,
    }, "Send");
    this.form = el("form", {
      class: "composer", "data-testid": id,
      onsubmit: (event) => {
        event.preventDefault();
        this.submit();
      },
    },
    this.suggestions,
    this.whisperInput,
    el("div", { class: "composer-row" }, this.input, this.whisperToggle, this.button),
    this.error);
    this.active = -1;
  }

  setEnabled(enabled, placeholder) {
    this.input.disabled = !enabled;
    this.button.disabled = !enabled;
    if (placeholder) {
      this.input.placeholder = placeholder;
      this.input.setAttribute("aria-label", placeholder);
    }
  }

  toggleWhisper() {
    const on = this.whisperInput.hidden;
    this.whisperInput.hidden = !on;
    this.whisperToggle.setAttribute("aria-pressed", on ? "true" : "false");
    (on ? this.whisperInput : this.input).focus();
  }

  keydown(event) {
    if (!this.suggestions.hidden) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        this.highlight(this.active + (event.key === "ArrowDown" ? 1 : -1));
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") {
        event.preventDefault();
        this.pick(this.active < 0 ? 0 : this.active);
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        this.closeSuggestions();
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.submit();
    }
  }

  changed() {
    this.error.textContent = "";
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
    const match = this.tokenAtCaret();
    if (!match) {
      this.closeSuggestions();
      return;
    }
    const items = this.options.suggest(match.sigil, match.prefix).slice(0, MAX_SUGGESTIONS);
    if (!items.length) {
      this.closeSuggestions();
      return;
    }
    this.items = items;
    fill(this.suggestions, items.map((item, index) => el("li", {
      role: "option", "data-testid": "autocomplete-option", "data-value": item.value,
      onmousedown: (event) => {
        event.preventDefault();
        this.pick(index);
      },
    }, el("span", {}, item.label), item.detail ? el("span", { class: "muted" }, item.detail) : null)));
    this.suggestions.hidden = false;
    this.highlight(0);
  }

  tokenAtCaret() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const found = TOKEN_BEFORE_CARET.exec(before);
    return found ? { sigil: found[2], prefix: found[3], start: before.length - found[3].length - 1 }
      : null;
  }

  highlight(index) {
    const options = [...this.suggestions.children];
    if (!options.length) return;
    this.active = (index + options.length) % options.length;
    options.forEach((node, i) => node.setAttribute("aria-selected", i === this.active ? "true" : "false"));
  }

  pick(index) {
    const match = this.tokenAtCaret();
    const item = this.items?.[index];
    if (match && item) {
      const caret = this.input.selectionStart;
      const text = this.input.value;
      const inserted = `${item.value} `;
      this.input.value = text.slice(0, match.start) + inserted + text.slice(caret);
      const at = match.start + inserted.length;
      this.input.setSelectionRange(at, at);
    }
    this.closeSuggestions();
    this.input.focus();
  }

  closeSuggestions() {
    this.suggestions.hidden = true;
    this.active = -1;
  }

  whisperNames() {
    if (!this.whisperToggle || this.whisperInput.hidden) return [];
    return this.whisperInput.value.split(/[\s,]+/).map((n) => n.replace(/^@/, "")).filter(Boolean);
  }

  async submit() {
    const text = this.input.value.trim();
    if (!text || this.button.disabled) return;
    const whisper = this.whisperNames();
    if (this.whisperToggle && !this.whisperInput.hidden && !whisper.length) {
      this.error.textContent = "Name who may read the whisper, or turn whispering off.";
      return;
    }
    this.button.disabled = true;
    try {
      await this.options.send({ text, whisper });
      this.input.value = "";
      this.changed();
    } catch (error) {
      this.error.textContent = visible(error.message);
    } finally {
      this.button.disabled = this.input.disabled;
      this.input.focus();
    }
  }

  focus() {
    this.input.focus();
  }
}
