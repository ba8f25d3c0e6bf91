/**
 * queue-panel.js: the staff queue on the console's dashboard. Who is waiting
 * in every live meeting this staff member may manage, without joining any
 * call: `GET /api/v1/queue` every 2 s, with admit / admit all / deny (with an
 * optional reason) over REST, and a way into each call.
 *
 * Wait times are counted against the server's clock (`now_ms` in each
 * response), so a browser clock that is off does not show "waiting -3:12".
 *
 * Meetings and entries are updated in place by id, so a half-typed deny
 * reason and keyboard focus survive the next poll.
 */

import { api, describeError, formatDuration } from './api.js';
import { h, initials } from './dom.js';

const POLL_MS = 2000;

/** Runs a DOM reorder; moving a node blurs what is focused inside it, so focus it again. */
function keepingFocus(fn) {
  const focused = document.activeElement;
  fn();
  if (focused && focused !== document.activeElement && focused.isConnected && !focused.closest('[hidden]')) {
    focused.focus({ preventScroll: true });
  }
}

export class QueuePanel {
  /**
   * @param {HTMLElement} mount where the panel goes (prepended)
   * @param {{token: () => string, onJoin: (m) => void, onError: (e) => void,
   *          onInfo: (text) => void, onLiveChanged: () => void, onPolled?: () => void}} hooks
   *        (`onPolled` after each poll answered: the console reads its open link lists then)
   */
  constructor(mount, hooks) {
    this.hooks = hooks;
    /** meeting_id -> { li, meeting, entries: Map(participant_id -> { li, entry }), ... } */
    this.meetings = new Map();
    /** server clock minus ours, from the last response */
    this.skewMs = 0;
    this.timer = null;
    this.ticker = null;
    this.running = false;
    this.inFlight = null;
    this.liveIds = null;
    /** participant ids already announced to screen readers */
    this.announced = new Set();
    /** participant_id -> when we admitted or denied them (their row stays hidden meanwhile) */
    this.handled = new Map();

    this.count = h('span', { class: 'count', dataset: { testid: 'queue-count' } }, '');
    this.heading = h('h2', { id: 'queue-heading', tabindex: '-1' }, 'Queue ', this.count);
    this.status = h('span', { class: 'small muted', dataset: { testid: 'queue-status' } }, 'Loading…');
    this.empty = h('p', { class: 'queue-empty muted', dataset: { testid: 'queue-empty' }, hidden: true }, 'Nobody is waiting.');
    this.list = h('ul', { class: 'queue-meetings', dataset: { testid: 'queue-list' }, 'aria-label': 'Live meetings' });
    this.announcer = h('p', { class: 'visually-hidden', 'aria-live': 'polite', dataset: { testid: 'queue-announcer' } });
    this.root = h(
      'section',
      { class: 'card queue-panel', dataset: { testid: 'queue-panel' }, 'aria-labelledby': 'queue-heading' },
      h('div', { class: 'panel-head' }, this.heading, this.status),
      this.empty,
      this.list,
      this.announcer,
    );
    mount.prepend(this.root);
  }

  /** Starts polling (now, then every 2 s). Idempotent. */
  start() {
    if (this.running) return;
    this.running = true;
    this.poll();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  /** Stops polling; what is shown stays until the next start refreshes it. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
    this.ticker = null;
  }

  /** Forgets what was shown (on sign-out: the next staff member may manage other meetings). */
  clear() {
    this.stop();
    this.list.replaceChildren();
    this.meetings.clear();
    this.handled.clear();
    this.announced.clear();
    this.liveIds = null;
    this.count.textContent = '';
    this.empty.hidden = true;
    this.root.classList.remove('has-waiting');
    this.status.textContent = 'Loading…';
    this.status.classList.remove('stale');
    document.title = 'Staff console · Gatehouse';
  }

  /** One poll now (coalesced with one in flight); schedules the next while running. */
  poll() {
    if (this.inFlight) return this.inFlight;
    clearTimeout(this.timer);
    this.timer = null;
    const sent = Date.now();
    this.inFlight = api('GET', '/api/v1/queue', { token: this.hooks.token() })
      .then((data) => {
        if (!this.running) return;
        // The server read its clock somewhere between sending and receiving.
        this.skewMs = data.now_ms - (sent + Date.now()) / 2;
        this.render(data.meetings || []);
        this.status.textContent = 'Updates every 2 seconds';
        this.status.classList.remove('stale');
        this.hooks.onPolled?.();
      })
      .catch((e) => {
        if (!this.running) return;
        this.status.textContent =
          e.status === 401
            ? 'Your sign-in has expired. Sign out and sign in again.'
            : `Not up to date: ${describeError(e)}`;
        this.status.classList.add('stale');
        if (e.status === 401) this.stop();
      })
      .finally(() => {
        this.inFlight = null;
        if (this.running && !this.timer) this.timer = setTimeout(() => this.poll(), POLL_MS);
      });
    return this.inFlight;
  }

  serverNow() {
    return Date.now() + this.skewMs;
  }

  render(meetings) {
    const oldest = (m) => Math.min(...m.lobby.map((e) => e.waiting_since_ms));
    const sorted = [...meetings].sort((a, b) => {
      const wa = a.lobby.length > 0;
      const wb = b.lobby.length > 0;
      if (wa !== wb) return wa ? -1 : 1;
      if (wa) return oldest(a) - oldest(b);
      return String(a.title).localeCompare(String(b.title));
    });
    const seen = new Set(sorted.map((m) => m.meeting_id));
    for (const [id, row] of [...this.meetings]) {
      if (seen.has(id)) continue;
      if (row.li.contains(document.activeElement)) this.heading.focus();
      row.li.remove();
      this.meetings.delete(id);
    }
    keepingFocus(() =>
      sorted.forEach((m, i) => {
        let row = this.meetings.get(m.meeting_id);
        if (!row) {
          row = this.buildMeeting(m);
          this.meetings.set(m.meeting_id, row);
        }
        this.updateMeeting(row, m);
        if (this.list.children[i] !== row.li) this.list.insertBefore(row.li, this.list.children[i] || null);
      }),
    );

    const waiting = meetings.reduce((n, m) => n + m.lobby.length, 0);
    this.count.textContent = waiting ? `(${waiting} waiting)` : '';
    this.empty.hidden = waiting > 0;
    this.root.classList.toggle('has-waiting', waiting > 0);
    document.title = `${waiting ? `(${waiting}) ` : ''}Staff console · Gatehouse`;

    // Tell the meetings list when a meeting went live or idle, so its state pills follow.
    const liveIds = [...seen].sort().join(',');
    if (this.liveIds !== null && this.liveIds !== liveIds) this.hooks.onLiveChanged?.();
    this.liveIds = liveIds;
    this.tick();
  }

  buildMeeting(m) {
    const row = { meeting: m, entries: new Map() };
    row.title = h('h3', { dataset: { testid: 'queue-meeting-title' } });
    row.inCall = h('span', { class: 'small muted', dataset: { testid: 'queue-in-call' } });
    row.noneWaiting = h('p', { class: 'small muted none-waiting' }, 'Nobody waiting in this meeting.');
    row.admitAll = h('button', {
      type: 'button',
      class: 'small secondary',
      dataset: { testid: 'queue-admit-all-button', meetingId: m.meeting_id },
      onclick: () =>
        this.act(row.admitAll, `/api/v1/meetings/${m.meeting_id}/lobby/admit-all`, undefined, () =>
          `Let everyone waiting into “${row.meeting.title}”.`),
    }, 'Admit all');
    row.join = h('button', {
      type: 'button',
      class: 'small secondary',
      dataset: { testid: 'queue-join-button', meetingId: m.meeting_id },
      onclick: () => this.hooks.onJoin(row.meeting),
    }, 'Join call');
    row.list = h('ul', { class: 'lobby-list queue-entries' });
    row.li = h(
      'li',
      { class: 'queue-meeting', dataset: { testid: 'queue-meeting', meetingId: m.meeting_id } },
      h('div', { class: 'queue-meeting-head' },
        h('div', { class: 'queue-meeting-what' }, row.title, row.inCall),
        h('div', { class: 'queue-meeting-actions' }, row.admitAll, row.join)),
      row.noneWaiting,
      row.list,
    );
    return row;
  }

  updateMeeting(row, m) {
    row.meeting = m;
    const title = m.title || 'Untitled meeting';
    if (row.title.textContent !== title) row.title.textContent = title;
    const inCall = m.in_call === 0 ? 'Nobody in the call yet' : `${m.in_call} in the call`;
    if (row.inCall.textContent !== inCall) row.inCall.textContent = inCall;
    row.li.setAttribute('aria-label', title);
    row.admitAll.setAttribute('aria-label', `Admit everyone waiting for ${title}`);
    row.join.setAttribute('aria-label', `Join the call: ${title}`);
    const hideAdmitAll = m.lobby.length < 2;
    if (hideAdmitAll && document.activeElement === row.admitAll) row.join.focus();
    row.admitAll.hidden = hideAdmitAll;
    row.noneWaiting.hidden = m.lobby.length > 0;
    row.li.classList.toggle('has-waiting', m.lobby.length > 0);

    const entries = [...m.lobby].sort((a, b) => a.waiting_since_ms - b.waiting_since_ms);
    const seen = new Set(entries.map((e) => e.participant_id));
    // Gone first (moving focus off them), then add and order the rest.
    for (const [id, er] of [...row.entries]) {
      if (seen.has(id)) continue;
      this.moveFocusFrom(er.li);
      er.li.remove();
      row.entries.delete(id);
      this.handled.delete(id);
    }
    keepingFocus(() =>
      entries.forEach((entry, i) => {
        let er = row.entries.get(entry.participant_id);
        if (!er) {
          er = this.buildEntry(row, entry);
          row.entries.set(entry.participant_id, er);
          // Announce arrivals, but not everyone already waiting when the page opened.
          if (!this.announced.has(entry.participant_id)) {
            this.announced.add(entry.participant_id);
            if (this.liveIds !== null) this.announce(`${entry.display_name} is waiting for ${title}.`);
          }
        }
        er.entry = entry;
        // Still listed after we admitted or denied them: a response from before the
        // action, or the action did not take. Show the row again after a while.
        const handledAt = this.handled.get(entry.participant_id);
        if (handledAt && Date.now() - handledAt > 5000) this.handled.delete(entry.participant_id);
        er.li.hidden = this.handled.has(entry.participant_id);
        if (row.list.children[i] !== er.li) row.list.insertBefore(er.li, row.list.children[i] || null);
      }),
    );
  }

  buildEntry(row, entry) {
    const meetingId = row.meeting.meeting_id;
    const id = entry.participant_id;
    const name = entry.display_name;
    const base = `/api/v1/meetings/${meetingId}/lobby/${encodeURIComponent(id)}`;
    const wait = h('span', { class: 'wait', dataset: { testid: 'queue-wait' } });
    const admit = h('button', {
      type: 'button',
      class: 'small primary',
      dataset: { testid: 'queue-admit-button', participantId: id },
      'aria-label': `Admit ${name}`,
      onclick: () => this.act(admit, `${base}/admit`, undefined, () => `${name} is in the call.`, li),
    }, 'Admit');
    const reason = h('input', {
      type: 'text',
      maxLength: 200,
      placeholder: 'e.g. Please use the link for your own appointment',
      'aria-label': `Reason for not letting ${name} in, shown to them (optional)`,
      dataset: { testid: 'queue-deny-reason' },
    });
    const deny = h('button', {
      type: 'button',
      class: 'small danger-outline',
      dataset: { testid: 'queue-deny-button', participantId: id },
      'aria-label': `Deny ${name}`,
      'aria-expanded': 'false',
    }, 'Deny');
    const cancel = h('button', {
      type: 'button',
      class: 'small secondary',
      dataset: { testid: 'queue-deny-cancel-button' },
      'aria-label': `Keep ${name} waiting`,
    }, 'Cancel');
    const denyForm = h(
      'form',
      { class: 'deny-form', hidden: true },
      h('label', { class: 'deny-reason' }, h('span', {}, 'Reason, shown to them (optional)'), reason),
      cancel,
    );
    const li = h(
      'li',
      {
        class: 'queue-entry',
        dataset: { testid: 'queue-entry', participantId: id, invited: String(entry.invited), kind: entry.kind },
      },
      h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(name)),
      h(
        'div',
        { class: 'who' },
        h('span', { class: 'name', dataset: { testid: 'queue-entry-name' } }, name),
        h(
          'span',
          { class: 'meta' },
          h('span', { class: `badge ${entry.kind}` }, entry.kind === 'staff' ? 'Staff' : 'Guest'),
          h('span', { class: `badge ${entry.invited ? 'invited' : 'uninvited'}`, dataset: { testid: 'queue-invited' } },
            entry.invited ? 'Invited' : 'Not invited'),
          wait,
        ),
      ),
      h('div', { class: 'actions' }, admit, deny),
      denyForm,
    );

    // Deny is two steps: the first press opens the reason field, the second
    // (or Enter in the field) denies. Cancel or Escape closes it again.
    const closeDeny = () => {
      denyForm.hidden = true;
      deny.className = 'small danger-outline';
      deny.textContent = 'Deny';
      deny.setAttribute('aria-label', `Deny ${name}`);
      deny.setAttribute('aria-expanded', 'false');
      deny.focus();
    };
    const sendDeny = () => {
      const text = reason.value.trim();
      this.act(deny, `${base}/deny`, text ? { reason: text } : {}, () => `${name} was not let in.`, li);
    };
    deny.addEventListener('click', () => {
      if (denyForm.hidden) {
        denyForm.hidden = false;
        deny.className = 'small danger';
        deny.textContent = 'Confirm deny';
        deny.setAttribute('aria-label', `Confirm: deny ${name}`);
        deny.setAttribute('aria-expanded', 'true');
        reason.focus();
      } else {
        sendDeny();
      }
    });
    denyForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sendDeny();
    });
    cancel.addEventListener('click', closeDeny);
    denyForm.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') closeDeny();
    });
    return { li, entry };
  }

  /**
   * One REST action. The button is disabled while it runs; on success the row
   * is taken away at once and the queue polled; a 404 means the person is no
   * longer there (someone else acted, they left, or the meeting ended).
   */
  async act(button, path, body, done, li = null) {
    if (button.disabled) return;
    // Disabling a focused button drops focus to the body: note it first.
    const hadFocus = Boolean(li?.contains(document.activeElement));
    button.disabled = true;
    li?.setAttribute('aria-busy', 'true');
    try {
      await api('POST', path, { token: this.hooks.token(), body });
      this.hooks.onError(null);
      if (li) {
        this.moveFocusFrom(li, hadFocus);
        li.hidden = true;
        this.handled.set(li.dataset.participantId, Date.now());
      }
      this.announce(done());
    } catch (e) {
      if (e.status === 404) {
        this.hooks.onError(null);
        this.hooks.onInfo('That person is no longer waiting (someone else may have let them in, or they left).');
      } else {
        this.hooks.onError(e);
      }
    } finally {
      button.disabled = false;
      li?.removeAttribute('aria-busy');
      // A poll already under way may predate the action: ask again after it.
      await this.inFlight;
      if (this.running) this.poll();
    }
  }

  /** Keeps keyboard focus in the queue when the focused row goes away. */
  moveFocusFrom(li, hadFocus = false) {
    if (!hadFocus && !li.contains(document.activeElement)) return;
    const rows = [...this.root.querySelectorAll('[data-testid="queue-entry"]')].filter((r) => !r.hidden);
    const i = rows.indexOf(li);
    const next = rows[i + 1] || rows[i - 1];
    const target = next?.querySelector('[data-testid="queue-admit-button"]');
    (target || this.heading).focus();
  }

  announce(text) {
    // A fresh text node each time, so the same sentence twice is still read.
    this.announcer.replaceChildren(document.createTextNode(text));
  }

  tick() {
    const now = this.serverNow();
    for (const row of this.meetings.values()) {
      for (const { li, entry } of row.entries.values()) {
        const text = `waiting ${formatDuration(now - entry.waiting_since_ms)}`;
        const el = li.querySelector('[data-testid="queue-wait"]');
        if (el.textContent !== text) el.textContent = text;
      }
    }
  }
}
