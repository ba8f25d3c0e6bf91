/**
 * lobby-panel.js: the staff view of a meeting's waiting room, live from the
 * client's `lobby_update` events: who waits, for how long (a ticking clock),
 * whether they were invited; admit one, admit all, or deny with a reason.
 *
 * Entries are updated in place by participant id, so a half-typed deny reason
 * survives the next update.
 */

import { h, initials } from './dom.js';
import { formatDuration } from './api.js';

export class LobbyPanel {
  constructor(mount, client) {
    this.client = client;
    /** participant_id -> { li, entry } */
    this.rows = new Map();
    this.count = h('span', { class: 'count', dataset: { testid: 'lobby-count' } }, '(0)');
    this.empty = h('p', { class: 'muted small', dataset: { testid: 'lobby-empty' } }, 'Nobody is waiting.');
    this.list = h('ul', { class: 'lobby-list', dataset: { testid: 'lobby-list' }, 'aria-label': 'People waiting' });
    this.admitAll = h('button', {
      type: 'button',
      class: 'small',
      dataset: { testid: 'admit-all-button' },
      onclick: () => this.act(() => client.admitAll()),
    }, 'Admit all');
    this.root = h(
      'section',
      { class: 'panel lobby-panel', dataset: { testid: 'lobby-panel' }, 'aria-labelledby': 'lobby-panel-heading' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'lobby-panel-heading' }, 'Waiting room ', this.count), this.admitAll),
      this.empty,
      this.list,
    );
    mount.append(this.root);
    this.onUpdate = (ev) => this.render(ev.detail.entries);
    client.addEventListener('lobby_update', this.onUpdate);
    this.timer = setInterval(() => this.tick(), 1000);
    this.render(client.lobbyEntries);
  }

  act(fn) {
    try {
      fn();
    } catch {
      // Not connected: the page's connection banner says so.
    }
  }

  render(entries) {
    const seen = new Set();
    entries.forEach((entry, i) => {
      seen.add(entry.participant_id);
      let row = this.rows.get(entry.participant_id);
      if (!row) {
        row = { li: this.buildRow(entry), entry };
        this.rows.set(entry.participant_id, row);
      }
      row.entry = entry;
      if (this.list.children[i] !== row.li) this.list.insertBefore(row.li, this.list.children[i] || null);
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
    this.count.textContent = `(${entries.length})`;
    this.empty.hidden = entries.length > 0;
    this.admitAll.disabled = entries.length === 0;
    this.root.classList.toggle('has-waiting', entries.length > 0);
    this.tick();
  }

  buildRow(entry) {
    const id = entry.participant_id;
    const name = entry.display_name;
    const wait = h('span', { class: 'wait', dataset: { testid: 'lobby-wait' } });
    const reason = h('input', {
      type: 'text',
      maxLength: 200,
      placeholder: 'Reason (optional, shown to them)',
      'aria-label': `Reason for not letting ${name} in`,
      dataset: { testid: 'deny-reason-input' },
    });
    const denyForm = h(
      'form',
      { class: 'deny-form', hidden: true },
      reason,
      h('button', { type: 'submit', class: 'small danger', dataset: { testid: 'deny-confirm-button' } }, 'Deny'),
      h('button', { type: 'button', class: 'small secondary', onclick: () => (denyForm.hidden = true) }, 'Cancel'),
    );
    denyForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.act(() => this.client.deny(id, reason.value));
    });
    const li = h(
      'li',
      { dataset: { testid: 'lobby-entry', participantId: id, invited: String(entry.invited), kind: entry.kind } },
      h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(name)),
      h(
        'div',
        { class: 'who' },
        h('span', { class: 'name', dataset: { testid: 'lobby-entry-name' } }, name),
        h(
          'span',
          { class: 'meta' },
          h('span', { class: `badge ${entry.kind}` }, entry.kind === 'staff' ? 'Staff' : 'Guest'),
          h('span', { class: `badge ${entry.invited ? 'invited' : 'uninvited'}`, dataset: { testid: 'lobby-invited' } },
            entry.invited ? 'Invited' : 'Not invited'),
          wait,
        ),
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', {
          type: 'button',
          class: 'small primary',
          dataset: { testid: 'admit-button', participantId: id },
          'aria-label': `Admit ${name}`,
          onclick: () => this.act(() => this.client.admit(id)),
        }, 'Admit'),
        h('button', {
          type: 'button',
          class: 'small danger-outline',
          dataset: { testid: 'deny-button', participantId: id },
          'aria-label': `Deny ${name}`,
          onclick: () => {
            denyForm.hidden = false;
            reason.focus();
          },
        }, 'Deny'),
      ),
      denyForm,
    );
    return li;
  }

  tick() {
    const now = Date.now();
    for (const { li, entry } of this.rows.values()) {
      const text = `waiting ${formatDuration(now - entry.waiting_since_ms)}`;
      const el = li.querySelector('[data-testid="lobby-wait"]');
      if (el.textContent !== text) el.textContent = text;
    }
  }

  destroy() {
    clearInterval(this.timer);
    this.client.removeEventListener('lobby_update', this.onUpdate);
    this.root.remove();
  }
}
