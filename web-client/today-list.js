/**
 * today-list.js: the console queue's list of today's appointments (issue 14). Every
 * appointment of the queue subscription's day, scheduled ones not yet waiting included,
 * with its time, guest, state, how long the guest has waited, and one-click Join, Admit,
 * Send reminder and Cancel. Fed by the queue panel from the pushed frames
 * (`queue_snapshot.appointments`, then `queue_appointment`; docs/PROTOCOL.md §15.7):
 * nothing here fetches the list.
 *
 * `todayActions`, `stateLabel` and `waitText` are pure (unit-tested in Node,
 * tests/browser/today-list.test.mjs); the class only draws and calls the REST actions.
 */

import { api, formatDuration } from './api.js';
import { h } from './dom.js';

const LABELS = {
  scheduled: 'Scheduled',
  waiting: 'Waiting',
  late: 'Late: waiting for staff',
  in_progress: 'In progress',
  completed: 'Completed',
  no_show: 'No-show',
  cancelled: 'Cancelled',
};

/** What people read for a state. */
export function stateLabel(state) {
  return LABELS[state] || state;
}

/** The guest may still come (or is here): reminders and cancelling make sense. */
const OPEN = new Set(['scheduled', 'waiting', 'late']);

/**
 * Which buttons an appointment's row offers. `live` is its meeting as the queue last
 * showed it (`{lobby: [...], in_call}`), or undefined when nobody is in it.
 * Join: while the appointment is not over (a no-show's guest may still come).
 * Admit: a guest of it is in the lobby. Remind and Cancel: while the guest may come.
 */
export function todayActions(a, live) {
  const guestsWaiting = (live?.lobby || []).filter((e) => e.kind === 'guest');
  return {
    join: !['completed', 'cancelled'].includes(a.state),
    admit: guestsWaiting.length > 0 && ['waiting', 'late', 'no_show', 'scheduled'].includes(a.state),
    remind: OPEN.has(a.state),
    cancel: OPEN.has(a.state),
  };
}

/**
 * How long the guest has waited, as shown: running while they wait (`waiting`, `late`),
 * from their first arrival to `now` (server clock); the lobby wait once served; nothing
 * before they came.
 */
export function waitText(a, now) {
  if ((a.state === 'waiting' || a.state === 'late') && a.first_arrived_ms) {
    return `waiting ${formatDuration(now - a.first_arrived_ms)}`;
  }
  if ((a.state === 'in_progress' || a.state === 'completed') && typeof a.lobby_wait_ms === 'number') {
    return `waited ${formatDuration(a.lobby_wait_ms)}`;
  }
  return '';
}

/** Order: by start; on-demand ones (no start) by when they changed state. */
export function byTime(a, b) {
  return (a.starts_at_ms ?? a.state_since_ms) - (b.starts_at_ms ?? b.state_since_ms) || a.appointment_id.localeCompare(b.appointment_id);
}

const clock = (ms) => new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }).format(ms);

export class TodayList {
  /**
   * @param {HTMLElement} mount where the list goes (appended)
   * @param {{token: () => string, onJoin: (m) => void, onError: (e) => void, onInfo: (text) => void,
   *          announce: (text) => void, live: (meetingId) => object|undefined, serverNow: () => number}} hooks
   */
  constructor(mount, hooks) {
    this.hooks = hooks;
    /** appointment_id -> the appointment as last pushed */
    this.appointments = new Map();
    /** appointment_id -> { li, parts } */
    this.rows = new Map();
    this.count = h('span', { class: 'count', dataset: { testid: 'today-count' } }, '');
    this.empty = h('p', { class: 'muted small', dataset: { testid: 'today-empty' } }, 'No appointments today.');
    this.list = h('ol', { class: 'today-list', dataset: { testid: 'today-list' }, 'aria-label': "Today's appointments" });
    this.root = h(
      'div',
      { class: 'today', dataset: { testid: 'today-panel' } },
      h('h3', {}, "Today's appointments ", this.count),
      this.empty,
      this.list,
    );
    mount.append(this.root);
  }

  /** The whole day (a snapshot): replaces what is shown. */
  replace(appointments) {
    this.appointments = new Map(appointments.map((a) => [a.appointment_id, a]));
    this.render();
  }

  /** One appointment changed (a `queue_appointment` frame). */
  update(a) {
    this.appointments.set(a.appointment_id, a);
    this.render();
  }

  clear() {
    this.appointments.clear();
    this.render();
  }

  render() {
    const sorted = [...this.appointments.values()].sort(byTime);
    for (const [id, row] of [...this.rows]) {
      if (this.appointments.has(id)) continue;
      row.li.remove();
      this.rows.delete(id);
    }
    sorted.forEach((a, i) => {
      let row = this.rows.get(a.appointment_id);
      if (!row) {
        row = this.build(a);
        this.rows.set(a.appointment_id, row);
      }
      this.fill(row, a);
      if (this.list.children[i] !== row.li) this.list.insertBefore(row.li, this.list.children[i] || null);
    });
    const open = sorted.filter((a) => OPEN.has(a.state)).length;
    this.count.textContent = sorted.length ? `(${sorted.length}, ${open} to come)` : '';
    this.empty.hidden = sorted.length > 0;
    this.tick();
  }

  build(a) {
    const id = a.appointment_id;
    const row = { a };
    row.time = h('span', { class: 'time', dataset: { testid: 'today-time' } });
    row.guest = h('span', { class: 'name', dataset: { testid: 'today-guest' } });
    row.title = h('span', { class: 'small muted', dataset: { testid: 'today-title' } });
    row.state = h('span', { class: 'badge', dataset: { testid: 'today-state' } });
    row.wait = h('span', { class: 'wait small', dataset: { testid: 'today-wait' } });
    const button = (testid, text, cls, onclick) =>
      h('button', { type: 'button', class: `small ${cls}`, dataset: { testid, appointmentId: id }, onclick }, text);
    row.join = button('today-join-button', 'Join', 'secondary', () =>
      this.hooks.onJoin({ meeting_id: row.a.meeting_id, title: `${row.a.title}: ${row.a.guest_name}` }));
    row.admit = button('today-admit-button', 'Admit', 'primary', () => this.admit(row));
    row.remind = button('today-remind-button', 'Send reminder', 'secondary', () => this.remind(row));
    row.cancel = button('today-cancel-button', 'Cancel', 'danger-outline', () => this.cancel(row));
    row.li = h(
      'li',
      { class: 'today-appointment', dataset: { testid: 'today-appointment', appointmentId: id } },
      row.time,
      h('div', { class: 'who' }, row.guest, row.title),
      h('div', { class: 'meta' }, row.state, row.wait),
      h('div', { class: 'actions' }, row.join, row.admit, row.remind, row.cancel),
    );
    return row;
  }

  fill(row, a) {
    row.a = a;
    const time = a.starts_at_ms ? clock(a.starts_at_ms) : 'On demand';
    if (row.time.textContent !== time) row.time.textContent = time;
    if (row.guest.textContent !== a.guest_name) row.guest.textContent = a.guest_name;
    if (row.title.textContent !== a.title) row.title.textContent = a.title;
    const label = stateLabel(a.state);
    if (row.state.textContent !== label) row.state.textContent = label;
    row.state.className = `badge state-${a.state}`;
    row.li.dataset.state = a.state;
    const can = todayActions(a, this.hooks.live(a.meeting_id));
    for (const k of ['join', 'admit', 'remind', 'cancel']) {
      // A button about to go with focus on it hands focus to Join (there while not over).
      if (!can[k] && document.activeElement === row[k] && can.join) row.join.focus();
      row[k].hidden = !can[k];
    }
    const who = `${a.guest_name}, ${time}`;
    row.join.setAttribute('aria-label', `Join the call with ${who}`);
    row.admit.setAttribute('aria-label', `Admit ${who}`);
    row.remind.setAttribute('aria-label', `Send ${who} a reminder`);
    if (!row.confirming) row.cancel.setAttribute('aria-label', `Cancel the appointment with ${who}`);
  }

  /** Lets every guest waiting in the appointment's lobby in. */
  async admit(row) {
    const live = this.hooks.live(row.a.meeting_id);
    const guests = (live?.lobby || []).filter((e) => e.kind === 'guest');
    await this.act(row.admit, async () => {
      for (const e of guests) {
        await api('POST', `/api/v1/meetings/${row.a.meeting_id}/lobby/${encodeURIComponent(e.participant_id)}/admit`, {
          token: this.hooks.token(),
        });
      }
      return `${row.a.guest_name} is in the call.`;
    });
  }

  async remind(row) {
    await this.act(row.remind, async () => {
      const r = await api('POST', `/api/v1/appointments/${row.a.appointment_id}/remind`, { token: this.hooks.token() });
      row.li.dataset.reminded = String(Number(row.li.dataset.reminded || 0) + 1);
      if (r.endpoints === 0) {
        this.hooks.onInfo('No webhook endpoint is configured, so no reminder could be sent (README, "Virtual appointments").');
        return 'No reminder sent.';
      }
      return `Reminder sent to ${row.a.guest_name}.`;
    });
  }

  /** Two steps: the first press asks, the second cancels. */
  async cancel(row) {
    if (!row.confirming) {
      row.confirming = true;
      row.cancel.textContent = 'Confirm cancel';
      row.cancel.className = 'small danger';
      row.cancel.setAttribute('aria-label', `Confirm: cancel the appointment with ${row.a.guest_name}`);
      return;
    }
    await this.act(row.cancel, async () => {
      await api('POST', `/api/v1/appointments/${row.a.appointment_id}/cancel`, { token: this.hooks.token() });
      return `The appointment with ${row.a.guest_name} is cancelled.`;
    });
    row.confirming = false;
    row.cancel.textContent = 'Cancel';
    row.cancel.className = 'small danger-outline';
  }

  /** One action; the change itself comes back pushed (`queue_appointment`). */
  async act(button, run) {
    if (button.disabled) return;
    button.disabled = true;
    try {
      const done = await run();
      this.hooks.onError(null);
      this.hooks.announce(done);
    } catch (e) {
      this.hooks.onError(e);
    } finally {
      button.disabled = false;
    }
  }

  tick() {
    const now = this.hooks.serverNow();
    for (const row of this.rows.values()) {
      const text = waitText(row.a, now);
      if (row.wait.textContent !== text) row.wait.textContent = text;
    }
  }
}
