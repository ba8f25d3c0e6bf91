/**
 * console.js: the staff console at /console. Sign in with a staff token
 * (kept in sessionStorage), create meetings, hand out links, and join a
 * meeting to run its waiting room live.
 *
 * Who waits is visible two ways: on the dashboard, the Queue (queue-panel.js)
 * polls `GET /api/v1/queue` for every live meeting and admits or denies over
 * REST without joining; inside a call, the lobby panel follows the server's
 * `lobby_update` frames. The queue polls only while the dashboard shows.
 *
 * The dashboard has no push channel (no socket until staff join a call), so the
 * link lists that are open are read again with each queue poll (every 2 s), on
 * Refresh and with the meetings: a link a guest just used shows as used at once.
 */

import { GatehouseClient, defaultSocketUrl } from './gatehouse-client.js';
import { api, describeError, describeLeft } from './api.js';
import { LocalMedia } from './media.js';
import { CallView } from './call-view.js';
import { LobbyPanel } from './lobby-panel.js';
import { QueuePanel } from './queue-panel.js';
import { AnalyticsPanel } from './analytics-panel.js';
import { byTestId, h, showError } from './dom.js';

const $ = (id) => byTestId(document, id);
const TOKEN_KEY = 'gatehouse.staffToken';

const page = {
  view: 'signin',
  token: null,
  claims: null,
  meetings: [],
  /** meeting_id -> links shown under that meeting */
  openLinks: new Map(),
  /** The address of the link just made, while the info banner shows it. */
  mintedUrl: null,
  client: null,
  callView: null,
  lobbyPanel: null,
  media: null,
  refreshTimer: null,
};

window.gatehouse = {
  page: 'console',
  get client() {
    return page.client;
  },
  get view() {
    return page.view;
  },
  stats: async () => (page.client ? page.client.stats() : null),
};

const BYPASS_TEXT = {
  organizer_only: 'only the organiser skips the waiting room',
  invited: 'invited people skip the waiting room',
  organization: 'all staff skip the waiting room',
  everyone: 'everyone skips the waiting room',
};

/** How often the open link lists are read again (only while one is open). */
const LINKS_REFRESH_MS = 3000;

function show(view) {
  page.view = view;
  document.body.dataset.view = view;
  $('signin-view').hidden = view !== 'signin';
  $('dashboard-view').hidden = view !== 'dashboard';
  $('live-view').hidden = view !== 'live';
  const signedIn = view !== 'signin';
  $('sign-out-button').hidden = !signedIn;
  $('signed-in-as').hidden = !signedIn;
  if (view !== 'dashboard' && page.refreshTimer) {
    clearInterval(page.refreshTimer);
    page.refreshTimer = null;
  }
  if (view === 'dashboard' && !page.refreshTimer) {
    page.refreshTimer = setInterval(() => loadMeetings().catch(() => {}), 15000);
  }
  // A link used or revoked elsewhere changes no queue (the meeting need not be live), so
  // the link lists shown are read again every few seconds while one is open.
  if (view !== 'dashboard' && page.linksTimer) {
    clearInterval(page.linksTimer);
    page.linksTimer = null;
  }
  if (view === 'dashboard' && !page.linksTimer) {
    page.linksTimer = setInterval(() => refreshOpenLinks(), LINKS_REFRESH_MS);
  }
  if (view === 'dashboard') queue.start();
  else queue.stop();
  if (view === 'dashboard') analytics.start().catch(() => {});
}

function info(text) {
  const b = $('info-banner');
  b.textContent = text || '';
  b.hidden = !text;
}

function error(e) {
  showError($('error-banner'), e ? describeError(e) : null);
}

/** The claims inside a staff token (for the name shown); null if unreadable. */
function decodeClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(payload))));
  } catch {
    return null;
  }
}

// -------------------------------------------------------------------- queue

const queue = new QueuePanel($('dashboard-main'), {
  token: () => page.token,
  onJoin: (q) => {
    // The meetings list has the full meeting; a meeting made by someone else may not be there yet.
    const m = page.meetings.find((x) => x.meeting_id === q.meeting_id) || { meeting_id: q.meeting_id, settings: { title: q.title } };
    joinMeeting(m);
  },
  onError: (e) => error(e),
  onInfo: (text) => info(text),
  onLiveChanged: () => loadMeetings().catch(() => {}),
  onPolled: () => refreshOpenLinks(),
});

// ---------------------------------------------------------------- analytics

const analytics = new AnalyticsPanel($('dashboard-main'), { token: () => page.token });

// ------------------------------------------------------------------ sign-in

async function signIn(token) {
  page.token = token;
  page.claims = decodeClaims(token);
  try {
    await loadMeetings();
  } catch (e) {
    page.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showError(
      $('error-banner'),
      e.status === 401 ? 'That token is not valid or has expired. Ask an administrator for a new one.' : describeError(e),
    );
    show('signin');
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('signed-in-as').textContent = page.claims?.name ? `Signed in as ${page.claims.name}` : 'Signed in';
  error(null);
  show('dashboard');
  return true;
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) {
    showError($('error-banner'), 'Paste your staff token first.');
    return;
  }
  signIn(token);
});

$('sign-out-button').addEventListener('click', () => {
  page.client?.leave();
  sessionStorage.removeItem(TOKEN_KEY);
  page.token = null;
  $('token-input').value = '';
  show('signin');
  queue.clear();
});

// ----------------------------------------------------------------- meetings

async function loadMeetings() {
  const [meetings] = await Promise.all([
    api('GET', '/api/v1/meetings', { token: page.token }),
    // The open link lists come from the server again too: Refresh shows its state.
    ...[...page.openLinks.keys()].map((id) => fetchLinks(id).catch(() => {})),
  ]);
  page.meetings = meetings;
  renderMeetings();
}

function renderMeetings() {
  forgetUsedMinted();
  const list = $('meeting-list');
  $('meetings-empty').hidden = page.meetings.length > 0;
  list.replaceChildren(...page.meetings.map(meetingRow));
}

function meetingRow(m) {
  const s = m.settings;
  const ended = m.state === 'ended';
  const stateText = { idle: 'Idle', live: 'Live', ended: 'Ended' }[m.state] || m.state;
  const summary = [
    BYPASS_TEXT[s.lobby_bypass],
    s.allow_anonymous ? 'public link open to anyone' : 'invited guests only',
    s.guests_may_present ? 'guests may present' : null,
    s.chat_enabled ? 'chat on' : 'chat off',
    `up to ${s.max_participants}`,
    `waiting room closes after ${Math.round(s.lobby_timeout_secs / 60)} min`,
  ].filter(Boolean);

  const invitee = h('input', {
    type: 'text',
    maxLength: 64,
    placeholder: 'Invitee name (optional)',
    'aria-label': `Invitee name for a new link to ${s.title}`,
    dataset: { testid: 'invitee-input' },
  });
  const links = h('ul', { class: 'link-list', dataset: { testid: 'link-list', meetingId: m.meeting_id } });
  const shown = page.openLinks.get(m.meeting_id);
  if (shown) links.replaceChildren(...shown.map((l) => linkEntry(m, l)));
  links.hidden = !shown;

  const mint = async (kind) => {
    try {
      const body = { kind };
      if (invitee.value.trim()) body.invitee = invitee.value.trim();
      const link = await api('POST', `/api/v1/meetings/${m.meeting_id}/links`, { token: page.token, body });
      await showLinks(m, link.link_id);
      info(`New ${kind === 'invite' ? 'private invitation' : 'single-use link'}: ${link.url}`);
      page.mintedUrl = link.url;
    } catch (e) {
      error(e);
    }
  };

  return h(
    'li',
    { class: `meeting ${m.state}`, dataset: { testid: 'meeting-row', meetingId: m.meeting_id, state: m.state } },
    h(
      'div',
      { class: 'meeting-head' },
      h('h3', { dataset: { testid: 'meeting-row-title' } }, s.title),
      h('span', { class: `pill state-${m.state}`, dataset: { testid: 'meeting-state' } }, stateText),
    ),
    h('p', { class: 'small muted' }, summary.join(' · ')),
    m.public_link && !ended
      ? h(
          'div',
          { class: 'link-row' },
          h('label', { class: 'small' }, 'Public link',
            h('input', { type: 'text', readOnly: true, value: m.public_link.url, dataset: { testid: 'public-link' } })),
          copyButton(m.public_link.url, `Copy the public link of ${s.title}`),
        )
      : null,
    ended
      ? null
      : h(
          'div',
          { class: 'actions' },
          h('button', {
            type: 'button',
            class: 'primary',
            dataset: { testid: 'join-meeting-button', meetingId: m.meeting_id },
            'aria-label': `Join ${s.title}`,
            onclick: () => joinMeeting(m),
          }, 'Join'),
          invitee,
          h('button', { type: 'button', class: 'secondary', dataset: { testid: 'new-invite-button' }, onclick: () => mint('invite') }, 'New private invitation'),
          h('button', { type: 'button', class: 'secondary', dataset: { testid: 'new-single-use-button' }, onclick: () => mint('single_use') }, 'New single-use link'),
          h('button', {
            type: 'button',
            class: 'secondary',
            dataset: { testid: 'show-links-button' },
            'aria-expanded': shown ? 'true' : 'false',
            onclick: () => (page.openLinks.has(m.meeting_id) ? hideLinks(m) : showLinks(m)),
          }, shown ? 'Hide links' : 'Show links'),
          endButton(m),
        ),
    links,
  );
}

function endButton(m) {
  const b = h('button', {
    type: 'button',
    class: 'danger-outline',
    dataset: { testid: 'end-meeting-row-button' },
    'aria-label': `End ${m.settings.title}`,
  }, 'End');
  b.addEventListener('click', async () => {
    if (b.dataset.confirm !== 'yes') {
      b.dataset.confirm = 'yes';
      b.textContent = 'Click again to end';
      return;
    }
    try {
      await api('POST', `/api/v1/meetings/${m.meeting_id}/end`, { token: page.token });
      await loadMeetings();
    } catch (e) {
      error(e);
    }
  });
  return b;
}

/**
 * Reads a meeting's links from the server into `page.openLinks` (newest first), keeping
 * which one is highlighted. Resolves to whether what is shown must change.
 */
async function fetchLinks(meetingId, highlight = null) {
  const links = await api('GET', `/api/v1/meetings/${meetingId}/links`, { token: page.token });
  links.sort((a, b) => b.created_at_ms - a.created_at_ms);
  const before = page.openLinks.get(meetingId);
  const lit = new Set((before || []).filter((l) => l.highlight).map((l) => l.link_id));
  if (highlight) lit.add(highlight);
  const next = links.map((l) => ({ ...l, highlight: lit.has(l.link_id) }));
  const changed = !before || JSON.stringify(before) !== JSON.stringify(next);
  page.openLinks.set(meetingId, next);
  return changed;
}

async function showLinks(m, highlight = null) {
  try {
    await fetchLinks(m.meeting_id, highlight);
    renderMeetings();
  } catch (e) {
    error(e);
  }
}

/**
 * The open link lists read again (with each queue poll); a list that changed is redrawn
 * in place, and focus inside it stays on the same link (its address when its Copy or
 * Revoke went with its use).
 */
let refreshingLinks = false;
async function refreshOpenLinks() {
  if (refreshingLinks || page.view !== 'dashboard' || page.openLinks.size === 0) return;
  refreshingLinks = true;
  try {
    for (const meetingId of [...page.openLinks.keys()]) {
      const changed = await fetchLinks(meetingId).catch(() => false);
      // Hidden meanwhile, or gone from the page: nothing to redraw.
      const shown = page.openLinks.get(meetingId);
      const m = page.meetings.find((x) => x.meeting_id === meetingId);
      const list = document.querySelector(`[data-testid="link-list"][data-meeting-id="${meetingId}"]`);
      if (!changed || !shown || !m || !list) continue;
      const focused = list.contains(document.activeElement) ? document.activeElement : null;
      const focusedLink = focused?.closest('[data-testid="link-entry"]')?.dataset.linkId;
      const focusedId = focused?.dataset.testid;
      list.replaceChildren(...shown.map((l) => linkEntry(m, l)));
      forgetUsedMinted();
      if (focusedLink) {
        const entry = list.querySelector(`[data-testid="link-entry"][data-link-id="${focusedLink}"]`);
        const target = entry?.querySelector(`[data-testid="${focusedId}"]`) || entry?.querySelector('[data-testid="link-url"]');
        target?.focus({ preventScroll: true });
      }
    }
  } finally {
    refreshingLinks = false;
  }
}

/** The banner naming a link just made must not offer it once it can no longer be used. */
function forgetUsedMinted() {
  if (!page.mintedUrl) return;
  const minted = [...page.openLinks.values()].flat().find((l) => l.url === page.mintedUrl);
  if (!minted || linkStatus(minted) === 'active') return;
  if ($('info-banner').textContent.includes(page.mintedUrl)) {
    info(`The link you made has been ${linkStatus(minted)}: make a new one to invite someone else.`);
  }
  page.mintedUrl = null;
}

function hideLinks(m) {
  page.openLinks.delete(m.meeting_id);
  renderMeetings();
}

function linkStatus(l) {
  if (l.revoked_at_ms) return 'revoked';
  if (l.expires_at_ms && l.expires_at_ms <= Date.now()) return 'expired';
  if (l.kind === 'single_use' && l.redemptions > 0) return 'used';
  return 'active';
}

function linkEntry(m, l) {
  const status = linkStatus(l);
  const kind = { public: 'Public', invite: 'Private invitation', single_use: 'Single use' }[l.kind] || l.kind;
  const expires = l.expires_at_ms ? `expires ${new Date(l.expires_at_ms).toLocaleDateString()}` : null;
  const revoke = h('button', {
    type: 'button',
    class: 'small danger-outline',
    dataset: { testid: 'revoke-link-button', linkId: l.link_id },
    'aria-label': `Revoke ${kind.toLowerCase()} link${l.invitee ? ` for ${l.invitee}` : ''}`,
    onclick: async () => {
      try {
        await api('DELETE', `/api/v1/meetings/${m.meeting_id}/links/${l.link_id}`, { token: page.token });
        await showLinks(m);
      } catch (e) {
        error(e);
      }
    },
  }, 'Revoke');
  return h(
    'li',
    { class: `link ${status}${l.highlight ? ' highlight' : ''}`, dataset: { testid: 'link-entry', linkId: l.link_id, kind: l.kind, status, code: l.code } },
    h('div', { class: 'link-meta' },
      h('strong', {}, kind),
      l.invitee ? h('span', {}, ` for ${l.invitee}`) : null,
      h('span', { class: `pill link-${status}`, dataset: { testid: 'link-status' } }, status),
      h('span', { class: 'small muted' }, [`used ${l.redemptions}×`, expires].filter(Boolean).join(' · ')),
    ),
    h('div', { class: 'link-row' },
      h('input', { type: 'text', readOnly: true, value: l.url, 'aria-label': `${kind} link`, dataset: { testid: 'link-url' } }),
      status === 'active' ? copyButton(l.url, `Copy ${kind.toLowerCase()} link`) : null,
      status === 'active' && l.kind !== 'public' ? revoke : null,
    ),
    // Nothing to copy or send on: the address lets nobody in any more.
    status === 'used'
      ? h('p', { class: 'small muted', dataset: { testid: 'link-used-note' } },
          'Used: this link cannot let anyone else in. Make a new single-use link for someone else.')
      : null,
  );
}

function copyButton(text, label) {
  const b = h('button', { type: 'button', class: 'small secondary', dataset: { testid: 'copy-link-button' }, 'aria-label': label }, 'Copy');
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
    } catch {
      // No clipboard permission: select the text so Ctrl+C works.
      const input = b.parentElement.querySelector('input');
      input?.select();
      b.textContent = 'Press Ctrl+C';
    }
    setTimeout(() => (b.textContent = 'Copy'), 2000);
  });
  return b;
}

$('create-meeting-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const title = $('meeting-title-input').value.trim();
  if (!title) {
    showError($('error-banner'), 'Give the meeting a title.');
    $('meeting-title-input').focus();
    return;
  }
  const body = {
    title,
    lobby_bypass: $('lobby-bypass-select').value,
    allow_anonymous: $('allow-anonymous-checkbox').checked,
    guests_may_present: $('guests-may-present-checkbox').checked,
    chat_enabled: $('chat-enabled-checkbox').checked,
    max_participants: Number($('max-participants-input').value) || 50,
    lobby_timeout_secs: Math.round((Number($('lobby-timeout-input').value) || 15) * 60),
  };
  try {
    const m = await api('POST', '/api/v1/meetings', { token: page.token, body });
    $('meeting-title-input').value = '';
    error(null);
    info(`Created “${m.settings.title}”. Public link: ${m.public_link ? m.public_link.url : 'none'}`);
    await loadMeetings();
  } catch (e) {
    error(e);
  }
});

$('refresh-button').addEventListener('click', () => loadMeetings().catch(error));

// --------------------------------------------------------------- live call

async function joinMeeting(m) {
  error(null);
  info(null);
  const media = new LocalMedia();
  page.media = media;
  // The signaling socket's handshake runs while the camera starts, not after it (a socket
  // that closed meanwhile, say a permission prompt answered after the server's 10 s for
  // `join`, is replaced by a fresh one).
  const socket = new WebSocket(defaultSocketUrl());
  try {
    await media.start();
  } catch (e) {
    socket.close();
    throw e;
  }
  // The camera goes as simulcast unless the console's address says `?simulcast=0`.
  const simulcast = new URLSearchParams(window.location.search).get('simulcast') !== '0';
  const client = new GatehouseClient({ token: page.token, meetingId: m.meeting_id, socket, simulcast });
  page.client = client;
  if (media.audioTrack) client.setLocalTrack('microphone', media.audioTrack);
  if (media.videoTrack) client.setLocalTrack('camera', media.videoTrack);
  $('topbar-title').textContent = m.settings.title;

  client.addEventListener('admitted', () => enterCall());
  client.addEventListener('lobby', ({ detail }) => {
    show('live');
    leaveCallView();
    const wait = h('section', { class: 'card lobby', dataset: { testid: 'staff-lobby-view' } },
      h('h1', {}, m.settings.title),
      h('p', { class: 'lobby-status', dataset: { testid: 'lobby-status', status: detail.status } },
        detail.status === 'waiting_for_host' ? 'Waiting for the host to join' : 'Waiting for someone to let you in'),
      h('button', { type: 'button', class: 'secondary', dataset: { testid: 'leave-button' }, onclick: () => client.leave() }, 'Leave'));
    $('call-mount').replaceChildren(wait);
  });
  client.addEventListener('error', ({ detail }) => error(detail));
  client.addEventListener('left', ({ detail }) => {
    leaveCallView();
    $('call-mount').replaceChildren();
    media.stop();
    page.client = null;
    $('connection-banner').hidden = true;
    $('topbar-title').textContent = '';
    const text = describeLeft(detail.reason, detail.message);
    info(`${m.settings.title}: ${text.title}.`);
    show('dashboard');
    loadMeetings().catch(error);
  });
  client.addEventListener('connection', ({ detail }) => {
    const banner = $('connection-banner');
    banner.textContent = detail.state === 'reconnecting' ? 'Connection lost. Reconnecting…' : '';
    banner.hidden = detail.state !== 'reconnecting';
  });
  try {
    await client.connect();
  } catch (e) {
    media.stop();
    page.client = null;
    error(e);
    show('dashboard');
  }
}

function enterCall() {
  leaveCallView();
  show('live');
  $('call-mount').replaceChildren();
  page.callView = new CallView($('call-mount'), page.client, { staff: true, onLeave: () => page.client.leave() });
  page.lobbyPanel = new LobbyPanel(page.callView.sideTop, page.client);
}

function leaveCallView() {
  page.lobbyPanel?.destroy();
  page.callView?.destroy();
  page.lobbyPanel = null;
  page.callView = null;
}

// ------------------------------------------------------------------- start

const stored = sessionStorage.getItem(TOKEN_KEY);
if (stored) {
  signIn(stored);
} else {
  show('signin');
}
