/**
 * dom.js: a few lines for building DOM safely. Text always goes in as text
 * (never as HTML), so names and chat from other people cannot inject markup.
 */

/**
 * h('button', { class: 'x', dataset: { testid: 'y' }, onclick: fn }, 'Label', child)
 * Attributes named on* become listeners; `dataset` and `style` objects are merged;
 * `false`/`null` attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** The element with this data-testid inside `root`. */
export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** Shows a message in the page's error banner (or hides it with `null`). */
export function showError(banner, text) {
  banner.textContent = text || '';
  banner.hidden = !text;
}

/** Initials for an avatar: "Maria van Dijk" -> "MD". */
export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const first = parts[0]?.[0] || '?';
  const last = parts.length > 1 ? parts[parts.length - 1][0] : '';
  return (first + last).toUpperCase();
}

/** Badge text for a participant. */
export function kindLabel(info) {
  if (info.kind !== 'staff') return 'Guest';
  return info.organizer ? 'Staff · host' : 'Staff';
}
