/**
 * book.js: the booking pages. /book/{org} lists an organisation's public
 * appointment types; /book/t/{code} opens a private type by its link; a type
 * shows a week of free slots in the viewer's time zone and books one; /book/a/{code}
 * is the guest's own appointment (join link, .ics, cancel). Nothing is stored in
 * the browser: the appointment page's address is the guest's key.
 */

import { api } from './api.js';
import { byTestId, h, showError } from './dom.js';

const $ = (id) => byTestId(document, id);
const parts = location.pathname.split('/').filter(Boolean).map(decodeURIComponent);
const DAY_MS = 24 * 3600 * 1000;
const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

const page = { view: 'loading', key: null, type: null, weekStart: 0, chosen: null };
window.gatehouse = { page: 'book', get view() { return page.view; } };

const MESSAGES = {
  slot_taken: 'Sorry, that time has just been taken. Please choose another.',
  link_used: 'This booking link has already been used. Please ask for a new one.',
  link_expired: 'This booking link has expired. Please ask for a new one.',
  not_found: 'We could not find this page. Please check the address.',
  rate_limited: 'Too many attempts from your connection. Please wait a minute and try again.',
  invalid_display_name: 'Please enter a name of 1 to 64 characters.',
  wrong_appointment_state: 'This appointment can no longer be changed.',
  network: 'The server could not be reached. Please check your internet connection.',
};
const say = (e) => MESSAGES[e.code] || e.message || 'Something went wrong.';

function show(view) {
  page.view = view;
  document.body.dataset.view = view;
  $('page-loading').hidden = view !== 'loading';
  $('types-view').hidden = view !== 'types';
  $('slots-view').hidden = view !== 'slots';
  $('booked-view').hidden = view !== 'booked';
}

const fmtTime = (ms) =>
  new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit' }).format(ms);
const fmtDay = (ms) => new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' }).format(ms);
const fmtClock = (ms) => new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }).format(ms);

async function listTypes(org) {
  const types = await api('GET', `/api/v1/book/orgs/${encodeURIComponent(org)}/types`);
  const list = $('type-list');
  list.replaceChildren(
    ...types.map((t) =>
      h('li', {}, h('button', { type: 'button', class: 'secondary', dataset: { testid: 'type-option' }, onclick: () => openType(t.key) },
        `${t.title} (${t.duration_minutes} min)`)),
    ),
  );
  $('no-types').hidden = types.length > 0;
  show('types');
}

async function openType(key) {
  page.key = key;
  page.type = await api('GET', `/api/v1/book/types/${encodeURIComponent(key)}`);
  $('type-title').textContent = page.type.title;
  $('type-duration').textContent = `${page.type.duration_minutes} minutes`;
  $('viewer-tz').textContent = tz;
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  page.weekStart = today.getTime();
  show('slots');
  await loadSlots();
}

async function loadSlots() {
  const from = new Date(page.weekStart).toISOString();
  const to = new Date(page.weekStart + 7 * DAY_MS).toISOString();
  $('week-label').textContent = `${fmtDay(page.weekStart)} – ${fmtDay(page.weekStart + 6 * DAY_MS)}`;
  const { slots } = await api('GET', `/api/v1/book/types/${encodeURIComponent(page.key)}/slots?from=${from}&to=${to}`);
  page.chosen = null;
  $('book-button').disabled = true;
  const byDay = new Map();
  for (const s of slots) {
    const day = fmtDay(s.starts_at_ms);
    if (!byDay.has(day)) byDay.set(day, []);
    byDay.get(day).push(s);
  }
  const groups = [...byDay.entries()].map(([day, list]) =>
    h('div', { role: 'radiogroup', 'aria-label': day },
      h('h2', { class: 'small' }, day),
      list.map((s) =>
        h('label', { class: 'slot' },
          h('input', { type: 'radio', name: 'slot', value: s.starts_at, dataset: { testid: 'slot-option' },
            onchange: () => { page.chosen = s.starts_at; $('book-button').disabled = false; } }),
          ` ${fmtClock(s.starts_at_ms)}`))));
  $('slot-list').replaceChildren(...groups);
  $('no-slots').hidden = slots.length > 0;
}

function showBooked(b) {
  const a = b.appointment;
  $('booked-title').textContent = a.title;
  $('booked-time').textContent = a.starts_at_ms ? fmtTime(a.starts_at_ms) : 'On demand';
  const cancelled = a.state === 'cancelled';
  $('booked-state').textContent = cancelled ? 'This appointment is cancelled.' : 'Booked.';
  $('booked-state').dataset.state = a.state;
  $('join-link').href = b.join_url;
  $('join-link').parentElement.hidden = cancelled;
  $('ics-link').href = b.ics_url;
  $('manage-link').href = b.manage_url;
  $('cancel-button').hidden = cancelled;
  $('cancel-button').onclick = async () => {
    try {
      showBooked(await api('POST', `/api/v1/book/appointments/${encodeURIComponent(b.manage_code)}/cancel`));
    } catch (e) {
      showError($('error-banner'), say(e));
    }
  };
  show('booked');
  $('booked-heading').focus();
}

$('prev-week').addEventListener('click', () => { page.weekStart -= 7 * DAY_MS; loadSlots().catch((e) => showError($('error-banner'), say(e))); });
$('next-week').addEventListener('click', () => { page.weekStart += 7 * DAY_MS; loadSlots().catch((e) => showError($('error-banner'), say(e))); });
$('book-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('name-input').value.trim();
  const err = $('form-error');
  err.hidden = true;
  if (!name) {
    err.textContent = MESSAGES.invalid_display_name;
    err.hidden = false;
    $('name-input').setAttribute('aria-invalid', 'true');
    return;
  }
  $('book-button').disabled = true;
  try {
    const contact = $('contact-input').value.trim();
    const b = await api('POST', `/api/v1/book/types/${encodeURIComponent(page.key)}/appointments`, {
      body: { starts_at: page.chosen, display_name: name, ...(contact ? { contact } : {}) },
    });
    history.replaceState(null, '', `/book/a/${encodeURIComponent(b.manage_code)}`);
    showBooked(b);
  } catch (e) {
    err.textContent = say(e);
    err.hidden = false;
    if (e.code === 'slot_taken') await loadSlots().catch(() => {});
    else $('book-button').disabled = false;
  }
});

async function start() {
  try {
    if (parts[1] === 'a' && parts[2]) {
      showBooked(await api('GET', `/api/v1/book/appointments/${encodeURIComponent(parts[2])}`));
    } else if (parts[1] === 't' && parts[2]) {
      await openType(parts[2]);
    } else if (parts[1]) {
      await listTypes(parts[1]);
    } else {
      throw { code: 'not_found' };
    }
  } catch (e) {
    show('error');
    showError($('error-banner'), say(e));
  }
}

start();
