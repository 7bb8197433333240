// The tab strip: click or arrow keys switch panels, the URL hash remembers the panel.

import { $ } from "./dom.js";

/**
 * Wire up every [role="tab"] and show the panel named by the URL hash (or the first).
 * `firstOpen` maps a panel id to a callback run the first time that panel is shown
 * (entries are removed as they run). Returns select(tab, {focus, updateHash}).
 */
export function setupTabs(firstOpen = new Map()) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const shown = () => tabs.filter((t) => !t.hidden); // a panel's tab is hidden until it applies (Tag)
  const select = (tab, { focus = false, updateHash = true } = {}) => {
    for (const t of tabs) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      $(`#${t.getAttribute("aria-controls")}`).hidden = !selected;
    }
    if (focus) tab.focus();
    const panel = tab.getAttribute("aria-controls");
    if (updateHash) history.replaceState(null, "", `#${panel.replace("panel-", "")}`);
    const first = firstOpen.get(panel);
    if (first) {
      firstOpen.delete(panel);
      first();
    }
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const visible = shown();
      const i = visible.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: visible.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      select(visible[(next + visible.length) % visible.length], { focus: true });
    });
  }
  const fromHash = shown().find((t) => t.id === `tab-${location.hash.slice(1)}`);
  select(fromHash ?? tabs[0], { updateHash: Boolean(fromHash) });
  return select;
}
