/**
 * join.js: the guest page at /j/{code}. Checks the link, shows a camera and
 * microphone preview, redeems the link for a guest token, then follows the
 * client through the lobby, the call and out again.
 *
 * The redeemed token is kept in sessionStorage per link code, so a reload
 * (or a single-use link opened again in the same tab) rejoins with it
 * instead of redeeming the link a second time.
 */

import { GatehouseClient, defaultSocketUrl } from './gatehouse-client.js';
import { api, describeError, describeLeft, formatDuration, formatSpan } from './api.js';
import { LocalMedia, explainDevices, fillDeviceSelect } from './media.js';
import { CallView } from './call-view.js';
import { byTestId, showError } from './dom.js';

const $ = (id) => byTestId(document, id);
const code = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
const storageKey = `gatehouse.guest.${code}`;

const page = {
  view: 'loading',
  client: null,
  callView: null,
  media: new LocalMedia(),
  micOn: true,
  camOn: true,
  link: null,
  /** The devices being opened (or the last opening, settled); Join waits for it. */
  mediaReady: null,
  /** True once the last opening of the devices has finished, whatever came of it. */
  mediaSettled: false,
  /** Openings of the devices finished (the notice's `data-attempts`: a retry shows as one more). */
  deviceAttempts: 0,
  lobbySince: 0,
  lobbyTimer: null,
  wasInCall: false,
  /** The guest token joined with (the lobby's appointment calls use it). */
  token: null,
  /** The guest's appointment, if they came through one's own link (null: none or not asked yet). */
  appointment: null,
  /** The guest cancelled their appointment from the lobby: the page says so when it has left. */
  cancelledAppointment: false,
};

window.gatehouse = {
  page: 'join',
  get client() {
    return page.client;
  },
  get view() {
    return page.view;
  },
  stats: async () => (page.client ? page.client.stats() : null),
};

function show(view) {
  page.view = view;
  $('page-loading').hidden = view !== 'loading';
  $('link-problem-view').hidden = view !== 'error';
  $('prejoin-view').hidden = view !== 'prejoin';
  $('lobby-view').hidden = view !== 'lobby';
  $('left-view').hidden = view !== 'left';
  $('call-mount').hidden = view !== 'call';
  document.body.dataset.view = view;
  if (view !== 'call' && page.callView) {
    page.callView.destroy();
    page.callView = null;
  }
  if (view !== 'lobby' && page.lobbyTimer) {
    clearInterval(page.lobbyTimer);
    page.lobbyTimer = null;
  }
}

function savedToken() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(storageKey) || 'null');
    if (saved && saved.expires_at_ms > Date.now() + 60_000) return saved;
  } catch {
    // unreadable: redeem again
  }
  return null;
}

// ------------------------------------------------------------------ prejoin

async function start() {
  if (!code) {
    showError($('error-banner'), describeError({ code: 'not_found' }));
    show('error');
    return;
  }
  const saved = savedToken();
  try {
    page.link = await api('GET', `/api/v1/links/${encodeURIComponent(code)}`);
  } catch (e) {
    // A single-use link we redeemed ourselves in this tab still gets us in.
    if (!(saved && e.code === 'link_used')) {
      showError($('error-banner'), describeError(e));
      document.body.dataset.errorCode = e.code;
      show('error');
      return;
    }
  }
  const title = page.link?.meeting_title || 'Your meeting';
  $('meeting-title').textContent = title;
  $('lobby-title').textContent = title;
  $('topbar-title').textContent = title;
  document.title = `${title} · Gatehouse`;
  if (page.link?.invitee) {
    $('invitee').textContent = `Invitation for ${page.link.invitee}`;
    $('invitee').hidden = false;
  }
  $('name-input').value = saved?.display_name || page.link?.invitee || '';
  show('prejoin');
  $('name-input').focus();
  await startPreview();
}

/**
 * Opens the devices (after any opening still under way) and shows what came of it.
 * `page.mediaReady` is the opening Join waits for, so a Join pressed before the
 * camera has started still joins with it.
 */
function startPreview(choice = {}) {
  page.mediaSettled = false;
  const opening = (page.mediaReady || Promise.resolve())
    .catch(() => {})
    .then(() => openDevices(choice))
    .finally(() => {
      if (page.mediaReady === opening) page.mediaSettled = true;
    });
  page.mediaReady = opening;
  return opening;
}

async function openDevices(choice) {
  await page.media.start(choice);
  page.deviceAttempts += 1;
  deviceNotice(page.media.problem, page.media.problem ? 'problem' : '');
  const { cameras, microphones } = await page.media.devices();
  fillDeviceSelect($('camera-select'), cameras, page.media.videoTrack?.getSettings().deviceId, 'Camera');
  fillDeviceSelect($('mic-select'), microphones, page.media.audioTrack?.getSettings().deviceId, 'Microphone');
  renderPreview();
  publishLateDevices();
}

/** The words under the preview (in a live region) and, for a problem, the Try again button. */
function deviceNotice(text, state) {
  const notice = $('preview-notice');
  notice.textContent = text || '';
  notice.hidden = !text;
  notice.dataset.state = state;
  notice.dataset.failures = page.media.failures.map((f) => `${f.device}:${f.reason}`).join(' ');
  notice.dataset.attempts = String(page.deviceAttempts);
  $('preview-retry-button').hidden = state !== 'problem' || page.view !== 'prejoin';
}

/** Devices that came after Join had stopped waiting for them go out now. */
function publishLateDevices() {
  const client = page.client;
  if (!client || client.state === 'left') return;
  const { audioTrack, videoTrack } = page.media;
  if (audioTrack && !client.local.has('microphone')) client.setLocalTrack('microphone', audioTrack, { muted: !page.micOn });
  if (videoTrack && !client.local.has('camera')) client.setLocalTrack('camera', videoTrack, { muted: !page.camOn });
  page.callView?.refreshLocal();
}

/**
 * Join waits for the devices being opened, at most this long: a browser question about
 * them may be left unanswered. Devices that come later are published then.
 */
const DEVICE_WAIT_MS = 20000;

async function devicesSettled() {
  if (page.mediaSettled || !page.mediaReady) return;
  deviceNotice('Waiting for your camera and microphone… If your browser asks, choose Allow.', 'starting');
  let timer = null;
  const waited = new Promise((resolve) => (timer = setTimeout(resolve, DEVICE_WAIT_MS)));
  await Promise.race([page.mediaReady.catch(() => {}), waited]);
  clearTimeout(timer);
  if (!page.mediaSettled) {
    deviceNotice('Your camera and microphone have not started yet; you are joining without them for now.', 'late');
  }
}

function renderPreview() {
  const { audioTrack, videoTrack } = page.media;
  for (const id of ['preview-video', 'lobby-video']) {
    const video = $(id);
    video.srcObject = videoTrack ? new MediaStream([videoTrack]) : null;
  }
  if (videoTrack) videoTrack.enabled = page.camOn;
  if (audioTrack) audioTrack.enabled = page.micOn;
  for (const el of [$('preview-tile'), document.querySelector('.lobby-preview')]) {
    el.classList.toggle('has-video', Boolean(videoTrack));
    el.classList.toggle('cam-off', !videoTrack || !page.camOn);
  }
  toggleButton($('prejoin-mic-toggle'), audioTrack, page.micOn, 'Mic');
  toggleButton($('prejoin-camera-toggle'), videoTrack, page.camOn, 'Camera');
}

function toggleButton(button, track, on, label) {
  button.disabled = !track;
  button.dataset.state = !track ? 'unavailable' : on ? 'on' : 'off';
  button.setAttribute('aria-pressed', track && on ? 'true' : 'false');
  button.textContent = !track ? `No ${label.toLowerCase()}` : on ? `${label} on` : `${label} off`;
}

$('prejoin-mic-toggle').addEventListener('click', () => {
  page.micOn = !page.micOn;
  renderPreview();
});
$('prejoin-camera-toggle').addEventListener('click', () => {
  page.camOn = !page.camOn;
  renderPreview();
});
$('camera-select').addEventListener('change', (e) =>
  startPreview({ videoDeviceId: e.target.value, audioDeviceId: $('mic-select').value || null }),
);
$('mic-select').addEventListener('change', (e) =>
  startPreview({ audioDeviceId: e.target.value, videoDeviceId: $('camera-select').value || null }),
);
$('preview-retry-button').addEventListener('click', () => {
  deviceNotice('Asking for your camera and microphone again…', 'starting');
  startPreview({ audioDeviceId: $('mic-select').value || null, videoDeviceId: $('camera-select').value || null });
});

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('name-input').value.trim().replace(/\s+/g, ' ');
  const nameError = $('name-error');
  if (!name || name.length > 64) {
    nameError.textContent = 'Please enter your name (up to 64 characters).';
    nameError.hidden = false;
    $('name-input').setAttribute('aria-invalid', 'true');
    $('name-input').focus();
    return;
  }
  nameError.hidden = true;
  $('name-input').removeAttribute('aria-invalid');
  const button = $('join-button');
  let early = null;
  button.disabled = true;
  button.textContent = page.mediaSettled ? 'Joining…' : 'Starting camera…';
  showError($('error-banner'), null);
  try {
    await devicesSettled();
    button.textContent = 'Joining…';
    // The signaling socket's handshake runs while the link is redeemed, not after it.
    early = new WebSocket(defaultSocketUrl());
    let saved = savedToken();
    if (!saved || (saved.display_name !== name && page.link)) {
      saved = await api('POST', `/api/v1/links/${encodeURIComponent(code)}/redeem`, { body: { display_name: name } });
      sessionStorage.setItem(storageKey, JSON.stringify(saved));
    }
    const socket = early;
    early = null;
    await joinWith(saved.token, socket);
  } catch (e) {
    early?.close();
    early = null;
    showError($('error-banner'), describeError(e));
    document.body.dataset.errorCode = e.code || '';
    button.disabled = false;
    button.textContent = 'Join';
  }
});

// -------------------------------------------------------------- the meeting

async function joinWith(token, socket = null) {
  // The camera goes as simulcast unless the join link says `?simulcast=0` (docs/WEB-CLIENT.md, "Media").
  const simulcast = new URLSearchParams(window.location.search).get('simulcast') !== '0';
  const client = new GatehouseClient({ token, socket, simulcast });
  page.client = client;
  page.token = token;
  const { audioTrack, videoTrack } = page.media;
  if (audioTrack) client.setLocalTrack('microphone', audioTrack, { muted: !page.micOn });
  if (videoTrack) client.setLocalTrack('camera', videoTrack, { muted: !page.camOn });

  client.addEventListener('lobby', ({ detail }) => showLobby(detail));
  client.addEventListener('queue_position', ({ detail }) => showQueuePosition(detail));
  client.addEventListener('admitted', () => showCall());
  client.addEventListener('left', ({ detail }) => showLeft(detail));
  client.addEventListener('connection', ({ detail }) => {
    const banner = $('connection-banner');
    if (detail.state === 'reconnecting') {
      banner.textContent = 'Connection lost. Reconnecting…';
      banner.hidden = false;
      if (page.view === 'call') page.wasInCall = true;
    } else if (detail.state === 'restored') {
      banner.hidden = true;
    }
  });
  await client.connect();
}

/** A guest waiting for an appointment: their place in its queue and an estimated wait. */
function showQueuePosition({ position, estimatedWaitSecs }) {
  const el = $('queue-position');
  let text = `You are number ${position} in the queue.`;
  if (estimatedWaitSecs === 0) {
    text += ' You should be seen any moment now.';
  } else if (typeof estimatedWaitSecs === 'number') {
    const minutes = Math.max(1, Math.ceil(estimatedWaitSecs / 60));
    text += ` Estimated wait: about ${minutes} minute${minutes === 1 ? '' : 's'}.`;
  }
  el.dataset.position = String(position);
  if (el.textContent !== text) el.textContent = text;
  el.hidden = false;
}

function showLobby({ status, timeoutSecs }) {
  const firstFrame = page.view !== 'lobby';
  show('lobby');
  if (firstFrame) page.lobbySince = Date.now();
  $('lobby-status').textContent =
    status === 'waiting_for_host' ? 'Waiting for the host to join' : 'Waiting for someone to let you in';
  $('lobby-status').dataset.status = status;
  const note = $('lobby-note');
  if (page.wasInCall) {
    note.textContent =
      'Your connection dropped for a moment, so you were taken out of the call. Someone needs to let you in again.';
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  $('lobby-timeout').textContent =
    `If nobody lets you in within ${formatSpan(timeoutSecs)}, the waiting room will close and you can open the link again.`;
  $('lobby-timeout').dataset.timeoutSecs = String(timeoutSecs);
  // The deadline is fixed when we entered the lobby; later frames repeat the full timeout.
  if (firstFrame) page.lobbyDeadline = page.lobbySince + timeoutSecs * 1000;
  const tick = () => {
    const now = Date.now();
    const left = formatDuration(page.lobbyDeadline - now);
    $('lobby-waited').textContent = `You have been waiting ${formatDuration(now - page.lobbySince)} (${left} left).`;
  };
  tick();
  if (!page.lobbyTimer) page.lobbyTimer = setInterval(tick, 1000);
  // Focus follows the view (the form that had it is gone): to what the guest now waits for.
  if (firstFrame) $('lobby-status').focus({ preventScroll: true });
  if (firstFrame && page.appointment === null) offerCancel();
}

/**
 * An appointment's guest (they came through its own link) may cancel it from the
 * lobby: `GET /api/v1/guest/appointment` with their token says whether they may; a
 * 404 (an ordinary meeting, or another link to it) shows nothing.
 */
async function offerCancel() {
  page.appointment = false;
  try {
    const mine = await api('GET', '/api/v1/guest/appointment', { token: page.token });
    page.appointment = mine.appointment;
    $('lobby-cancel').hidden = !mine.may_cancel || page.view !== 'lobby';
  } catch {
    // No appointment (or the server could not say): nothing to offer.
  }
}

function askCancel(open) {
  $('lobby-cancel-confirm-row').hidden = !open;
  $('lobby-cancel-button').hidden = open;
  $('lobby-cancel-button').setAttribute('aria-expanded', String(open));
  (open ? $('lobby-cancel-confirm') : $('lobby-cancel-button')).focus();
}

$('lobby-cancel-button').addEventListener('click', () => askCancel(true));
$('lobby-cancel-keep').addEventListener('click', () => askCancel(false));
$('lobby-cancel-confirm').addEventListener('click', async () => {
  const button = $('lobby-cancel-confirm');
  button.disabled = true;
  // Set first: the gateway ends the appointment's meeting as it cancels, so the `left`
  // frame may come before the answer to this request.
  page.cancelledAppointment = true;
  try {
    await api('POST', '/api/v1/guest/appointment/cancel', { token: page.token });
    showError($('error-banner'), null);
    page.client?.leave();
  } catch (e) {
    page.cancelledAppointment = false;
    showError($('error-banner'), describeError(e));
    button.disabled = false;
  }
});

function showCall() {
  page.wasInCall = false;
  // A rejoin straight into the call (after a drop) gets a fresh view.
  page.callView?.destroy();
  page.callView = null;
  show('call');
  page.callView = new CallView($('call-mount'), page.client, {
    onLeave: () => page.client.leave(),
  });
  // Joined without a device: say why here too, where the "unavailable" buttons are.
  if (page.media.failures.length) page.callView.showNotice(explainDevices(page.media.failures, { inCall: true }));
  page.callView.focusFirstControl();
}

function showLeft({ reason, message }) {
  show('left');
  page.media.stop();
  const text = page.cancelledAppointment
    ? { title: 'Your appointment is cancelled', detail: 'You have left the waiting room. You can book a new appointment whenever you like.' }
    : describeLeft(reason, message);
  $('left-title').textContent = text.title;
  $('left-reason').textContent = text.detail;
  $('left-view').dataset.reason = reason;
  $('connection-banner').hidden = true;
  const rejoin = $('rejoin-button');
  rejoin.hidden = page.cancelledAppointment || !['left', 'lobby_timeout', 'disconnected', 'replaced'].includes(reason);
  $('left-view').dataset.cancelled = String(page.cancelledAppointment);
  $('left-title').focus({ preventScroll: true });
}

$('leave-button').addEventListener('click', () => page.client?.leave());
$('rejoin-button').addEventListener('click', () => location.reload());

start();
