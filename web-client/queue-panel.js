/**
 * queue-panel.js: the staff queue on the console's dashboard. Who is waiting
 * in every live meeting this staff member may manage, without joining any
 * call: pushed over a queue subscription on the signaling WebSocket
 * (`subscribe_queue`: a `queue_snapshot`, then a `queue_meeting` on every
 * change; docs/PROTOCOL.md §15.7), with admit / admit all / deny (with an
 * optional reason) over REST, and a way into each call. No polling: a lost
 * socket is opened again (1, 2, 5, then every 10 s) and its snapshot replaces
 * what is shown.
 *
 * Wait times are counted against the server's clock (`now_ms` in each frame),
 * so a browser clock that is off does not show "waiting -3:12".
 *
 * Meetings and entries are updated in place by id, so a half-typed deny
 * reason and keyboard focus survive the next update.
 *
 * Below the live meetings, today's appointments (today-list.js): every appointment of
 * the day with its state, pushed as `queue_appointment` frames, with Join, Admit, Send
 * reminder and Cancel.
 *
 * The knock: when someone starts waiting, a short beep (WebAudio) and a
 * browser notification, unless staff turned it off (kept in localStorage).
 */

import { api, describeError, formatDuration } from './api.js';
import { h, initials } from './dom.js';
import { defaultSocketUrl } from './gatehouse-client.js';
import { TodayList } from './today-list.js';

/** Waits before opening the socket again, by attempt. */
const RECONNECT_MS = [1000, 2000, 5000, 10000];
/** localStorage key of the knock toggle ('off' when turned off). */
const KNOCK_KEY = 'gatehouse.knock';

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
   *        (`onPolled` after each queue update: the console reads its open link lists then)
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
    /** the queue subscription's socket, while subscribed */
    this.socket = null;
    /** reconnections since the last snapshot */
    this.attempt = 0;
    /** the server refused the subscription (sign-in expired): no reconnecting */
    this.refused = false;
    /** meeting_id -> the live meeting as last pushed */
    this.live = new Map();
    /** how many knocks were given (for tests and the curious) */
    this.knocks = 0;
    this.liveIds = null;
    /** participant ids already announced to screen readers */
    this.announced = new Set();
    /** participant_id -> when we admitted or denied them (their row stays hidden meanwhile) */
    this.handled = new Map();

    this.count = h('span', { class: 'count', dataset: { testid: 'queue-count' } }, '');
    this.heading = h('h2', { id: 'queue-heading', tabindex: '-1' }, 'Queue ', this.count);
    this.status = h('span', { class: 'small muted', dataset: { testid: 'queue-status' } }, 'Loading…');
    this.knockToggle = h('input', {
      type: 'checkbox',
      dataset: { testid: 'knock-toggle' },
      checked: localStorage.getItem(KNOCK_KEY) !== 'off',
      onchange: () => {
        localStorage.setItem(KNOCK_KEY, this.knockToggle.checked ? 'on' : 'off');
        // Asked on the click itself: browsers only ask for permission on a user gesture.
        if (this.knockToggle.checked && 'Notification' in window && Notification.permission === 'default') {
          Notification.requestPermission().catch(() => {});
        }
      },
    });
    const knockLabel = h('label', { class: 'small knock-toggle' }, this.knockToggle,
      ' Sound and notification when someone starts waiting');
    this.empty = h('p', { class: 'queue-empty muted', dataset: { testid: 'queue-empty' }, hidden: true }, 'Nobody is waiting.');
    this.list = h('ul', { class: 'queue-meetings', dataset: { testid: 'queue-list' }, 'aria-label': 'Live meetings' });
    this.announcer = h('p', { class: 'visually-hidden', 'aria-live': 'polite', dataset: { testid: 'queue-announcer' } });
    this.root = h(
      'section',
      { class: 'card queue-panel', dataset: { testid: 'queue-panel' }, 'aria-labelledby': 'queue-heading' },
      h('div', { class: 'panel-head' }, this.heading, this.status),
      knockLabel,
      this.empty,
      this.list,
      this.announcer,
    );
    // Today's appointments, from the same subscription (today-list.js).
    this.today = new TodayList(this.root, {
      token: () => this.hooks.token(),
      onJoin: (m) => this.hooks.onJoin(m),
      onError: (e) => this.hooks.onError(e),
      onInfo: (text) => this.hooks.onInfo(text),
      announce: (text) => this.announce(text),
      live: (meetingId) => this.live.get(meetingId),
      serverNow: () => this.serverNow(),
    });
    mount.prepend(this.root);
  }

  /** Subscribes to the queue (and keeps subscribed). Idempotent. */
  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.connect();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  /** Unsubscribes; what is shown stays until the next start replaces it. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
    this.ticker = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
  }

  /** Forgets what was shown (on sign-out: the next staff member may manage other meetings). */
  clear() {
    this.stop();
    this.list.replaceChildren();
    this.meetings.clear();
    this.live.clear();
    this.handled.clear();
    this.announced.clear();
    this.liveIds = null;
    this.today.clear();
    this.count.textContent = '';
    this.empty.hidden = true;
    this.root.classList.remove('has-waiting');
    this.status.textContent = 'Loading…';
    this.status.classList.remove('stale');
    document.title = 'Staff console · Gatehouse';
  }

  /** Opens the queue subscription. */
  connect() {
    const socket = new WebSocket(defaultSocketUrl());
    this.socket = socket;
    socket.addEventListener('open', () => {
      // `tz`: "today" is the staff member's local day.
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      socket.send(JSON.stringify({ type: 'subscribe_queue', protocol: 1, token: this.hooks.token(), ...(tz ? { tz } : {}) }));
    });
    socket.addEventListener('message', (ev) => {
      if (socket !== this.socket) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onFrame(msg);
    });
    socket.addEventListener('close', () => {
      if (socket !== this.socket || !this.running) return;
      this.socket = null;
      this.status.classList.add('stale');
      if (this.refused) return;
      this.status.textContent = 'Not up to date: reconnecting…';
      const wait = RECONNECT_MS[Math.min(this.attempt, RECONNECT_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.running) this.connect();
      }, wait);
    });
  }

  onFrame(msg) {
    switch (msg.type) {
      case 'queue_snapshot':
        this.attempt = 0;
        this.refused = false;
        this.live = new Map(msg.meetings.map((m) => [m.meeting_id, m]));
        this.today.replace(msg.appointments || []);
        this.updated(msg.now_ms);
        this.status.textContent = 'Live';
        this.status.classList.remove('stale');
        break;
      case 'queue_appointment':
        this.skewMs = msg.now_ms - Date.now();
        this.today.update(msg.appointment);
        break;
      case 'queue_meeting':
        if (msg.meeting) this.live.set(msg.meeting_id, msg.meeting);
        else this.live.delete(msg.meeting_id);
        this.updated(msg.now_ms);
        break;
      case 'error':
        this.refused = msg.code === 'unauthorized' || msg.code === 'token_expired' || msg.code === 'forbidden';
        this.status.textContent = this.refused
          ? 'Your sign-in has expired. Sign out and sign in again.'
          : `Not up to date: ${describeError({ code: msg.code, message: msg.message })}`;
        this.status.classList.add('stale');
        // As the 401 of a poll did: stopped, so the next start (after signing in) subscribes again.
        if (this.refused) this.stop();
        break;
      default:
        break;
    }
  }

  updated(nowMs) {
    this.skewMs = nowMs - Date.now();
    this.render([...this.live.values()]);
    // Admit in today's list follows who is in each lobby.
    this.today.render();
    this.hooks.onPolled?.();
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
            if (this.liveIds !== null) {
              this.announce(`${entry.display_name} is waiting for ${title}.`);
              this.knock(entry, title);
            }
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
   * is taken away at once (the change is pushed back); a 404 means the person is no
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
      // The change comes back as a `queue_meeting` frame: nothing to fetch.
    }
  }

  /** A guest started waiting: a beep and a notification, unless turned off. */
  knock(entry, title) {
    if (!this.knockToggle.checked || entry.kind !== 'guest') return;
    this.knocks += 1;
    this.root.dataset.knocks = String(this.knocks);
    try {
      this.audio ??= new AudioContext();
      this.audio.resume().catch(() => {});
      const osc = this.audio.createOscillator();
      const gain = this.audio.createGain();
      const t = this.audio.currentTime;
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.2, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.25);
      osc.connect(gain).connect(this.audio.destination);
      osc.start(t);
      osc.stop(t + 0.3);
    } catch {
      // No audio output: the notification and the announcement remain.
    }
    if ('Notification' in window && Notification.permission === 'granted') {
      try {
        new Notification('Someone is waiting', { body: `${entry.display_name} is waiting for ${title}.`, tag: entry.participant_id });
      } catch {
        // Some browsers allow notifications from service workers only.
      }
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
    this.today?.tick();
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
