/**
 * call-view.js: the in-call screen both pages share: the video grid (screen
 * shares large), the controls, the participant list and the chat panel.
 *
 * A CallView exists only while its client is in the call; `destroy()` removes
 * it (and with it the chat) when the participant leaves, is removed, or drops
 * back to the lobby. Staff get extra controls (remove, end meeting) and a slot
 * (`sideTop`) where the console puts its live lobby queue.
 */

import { h, initials, kindLabel } from './dom.js';
import { describeError } from './api.js';
import { describePeerMedia, describeQuality, LOW_QUALITY_TEXT, LowQualityLabel, phaseMessage, qualityNoticeText } from './media-status.js';
import { TileNeeds } from './tile-needs.js';

export class CallView {
  /**
   * @param {HTMLElement} mount   where the view goes
   * @param {import('./gatehouse-client.js').GatehouseClient} client
   * @param {object} options
   * @param {() => void} options.onLeave         called when the person clicks Leave
   * @param {boolean} [options.staff]            staff controls
   */
  constructor(mount, client, { onLeave, staff = false }) {
    this.client = client;
    this.staff = staff;
    this.onLeave = onLeave;
    /** participant_id -> { tile, video, audio, avatar, caption } for camera tiles */
    this.tiles = new Map();
    /** track_id -> tile element, for screen shares */
    this.screenTiles = new Map();
    this.listeners = [];
    /** What each camera tile needs of its video, told to the gateway (simulcast quality). */
    this.needs = new TileNeeds((trackId, quality) => client.setQuality(trackId, quality));
    /** track_id -> { label: LowQualityLabel, timer } for remote videos (see `renderVideoLayer`). */
    this.lowQuality = new Map();
    this.build(mount);
    this.listen();
    this.renderAll();
  }

  build(mount) {
    const c = this.client;
    this.grid = h('div', { class: 'grid', dataset: { testid: 'video-grid' }, role: 'region', 'aria-label': 'Video' });
    this.localVideo = h('video', { autoplay: true, playsInline: true, muted: true, 'aria-hidden': 'true' });
    this.localScreenVideo = h('video', { autoplay: true, playsInline: true, muted: true, 'aria-hidden': 'true' });
    this.localSpeaking = speakingPill();
    this.localQuality = qualityBadge();
    this.localTile = h(
      'figure',
      { class: 'tile local', dataset: { testid: 'local-tile', participantId: c.you.participant_id, source: 'camera', speaking: 'false' } },
      this.localVideo,
      h('div', { class: 'avatar', 'aria-hidden': 'true' }, initials(c.you.display_name)),
      h('figcaption', {}, h('span', { class: 'name' }, `${c.you.display_name} (you)`), badge(c.you), this.localSpeaking, this.localQuality),
    );
    this.localScreenTile = h(
      'figure',
      { class: 'tile local-screen', hidden: true, dataset: { testid: 'local-screen-tile' } },
      this.localScreenVideo,
      h('figcaption', {}, h('span', { class: 'name' }, 'You are presenting')),
    );
    this.grid.append(this.localTile, this.localScreenTile);

    this.micButton = h('button', { type: 'button', class: 'control', dataset: { testid: 'mic-toggle' }, onclick: () => this.toggle('microphone') });
    this.camButton = h('button', { type: 'button', class: 'control', dataset: { testid: 'camera-toggle' }, onclick: () => this.toggle('camera') });
    const mayPresent = this.staff || c.meeting.guests_may_present;
    this.screenButton = mayPresent
      ? h('button', { type: 'button', class: 'control', dataset: { testid: 'screen-toggle' }, onclick: () => this.toggleScreen() })
      : null;
    this.leaveButton = h(
      'button',
      { type: 'button', class: 'control danger', dataset: { testid: 'leave-button' }, 'aria-label': 'Leave the meeting', onclick: () => this.onLeave() },
      'Leave',
    );
    this.endButton = this.staff ? this.buildEndButton() : null;
    this.notice = h('p', { class: 'notice', role: 'status', hidden: true, dataset: { testid: 'media-notice' } });
    // Our own connection quality (`connection_quality`) when it is weak: a polite live region
    // that stays in the page (empty, and out of the layout, while the connection is fine) so
    // screen readers announce the words put into it.
    this.qualityNotice = h('div', {
      class: 'quality-notice',
      role: 'status',
      dataset: { testid: 'connection-notice', quality: 'excellent', videoReduced: 'false' },
    });
    // Own media: a quiet status line ("Connected over UDP") and, when media is in trouble,
    // an alert with what is happening and what to try. Both regions stay in the page so
    // screen readers announce changes; the alert is empty while all is well.
    this.mediaStatus = h('span', {
      class: 'media-status',
      role: 'status',
      'aria-live': 'polite',
      dataset: { testid: 'media-status', phase: 'idle', path: '' },
    });
    this.mediaAlert = h('div', { class: 'media-alert', role: 'alert', 'aria-live': 'assertive', dataset: { testid: 'media-alert' } });
    const controls = h(
      'div',
      { class: 'controls', role: 'toolbar', 'aria-label': 'Call controls' },
      this.micButton,
      this.camButton,
      this.screenButton,
      this.mediaStatus,
      h('span', { class: 'spacer' }),
      this.endButton,
      this.leaveButton,
    );

    this.peopleCount = h('span', { class: 'count' });
    this.peopleList = h('ul', { class: 'people', dataset: { testid: 'participant-list' }, 'aria-label': 'People in the call' });
    // A guest admitted from the staff queue can be first in the call.
    this.aloneNote = h('p', { class: 'muted small', role: 'status', hidden: true, dataset: { testid: 'alone-note' } },
      'Nobody else is here yet. The others will appear when they join.');
    const people = h('section', { class: 'panel', 'aria-labelledby': 'people-heading' },
      h('h2', { id: 'people-heading' }, 'In the call ', this.peopleCount),
      this.peopleList,
      this.aloneNote,
    );

    this.sideTop = h('div', { class: 'side-top' });
    this.chatPanel = this.buildChat();
    this.root = h(
      'section',
      { class: 'call', dataset: { testid: 'call-view' }, 'aria-label': `Call: ${c.meeting.title}` },
      h('div', { class: 'call-main' }, this.mediaAlert, this.notice, this.qualityNotice, this.grid, controls),
      h('aside', { class: 'side' }, this.sideTop, people, this.chatPanel),
    );
    mount.append(this.root);
  }

  buildEndButton() {
    const end = h('button', {
      type: 'button',
      class: 'control danger-outline',
      dataset: { testid: 'end-meeting-button' },
      'aria-label': 'End the meeting for everyone',
    }, 'End meeting');
    end.addEventListener('click', () => {
      if (end.dataset.confirm === 'yes') {
        this.client.endMeeting();
        return;
      }
      end.dataset.confirm = 'yes';
      end.textContent = 'Click again to end for everyone';
      setTimeout(() => {
        end.dataset.confirm = '';
        end.textContent = 'End meeting';
      }, 5000);
    });
    return end;
  }

  buildChat() {
    const c = this.client;
    this.chatList = h('ol', { class: 'chat-messages', dataset: { testid: 'chat-messages' }, 'aria-live': 'polite', 'aria-label': 'Chat messages' });
    const panel = h('section', { class: 'panel chat', dataset: { testid: 'chat-panel' }, 'aria-labelledby': 'chat-heading' },
      h('h2', { id: 'chat-heading' }, 'Chat'),
      this.chatList,
    );
    if (!c.meeting.chat_enabled) {
      panel.append(h('p', { class: 'muted', dataset: { testid: 'chat-disabled' } }, 'Chat is turned off for this meeting.'));
      return panel;
    }
    this.chatInput = h('input', {
      type: 'text',
      maxLength: 2000,
      autocomplete: 'off',
      placeholder: 'Write a message',
      'aria-label': 'Chat message',
      dataset: { testid: 'chat-input' },
    });
    const form = h('form', { class: 'chat-form' },
      this.chatInput,
      h('button', { type: 'submit', dataset: { testid: 'chat-send' } }, 'Send'),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = this.chatInput.value.trim();
      if (!text) return;
      try {
        c.sendChat(text);
        this.chatInput.value = '';
      } catch (e) {
        this.showNotice(describeError(e));
      }
    });
    panel.append(form);
    return panel;
  }

  listen() {
    const on = (type, fn) => {
      const handler = (ev) => fn(ev.detail);
      this.client.addEventListener(type, handler);
      this.listeners.push([type, handler]);
    };
    on('participant_joined', ({ participant }) => {
      this.ensureTile(participant.participant_id);
      this.renderPeople();
    });
    on('participant_left', ({ participantId }) => {
      const left = this.tiles.get(participantId);
      if (left) this.needs.unwatch(left.video);
      left?.tile.remove();
      this.tiles.delete(participantId);
      this.renderPeople();
    });
    on('track_published', ({ track }) => {
      if (track.source === 'screen') this.screenTile(track);
      this.renderTileState(track.participant_id);
      this.renderPeople();
    });
    on('track_unpublished', ({ trackId, participantId, source }) => {
      this.forgetLowQuality(trackId, { track_id: trackId, participant_id: participantId, source });
      if (source === 'screen') {
        this.screenTiles.get(trackId)?.remove();
        this.screenTiles.delete(trackId);
        this.updateLayout();
      } else {
        const t = this.tiles.get(participantId);
        if (t && source === 'camera') this.setVideo(t, null);
        this.renderTileState(participantId);
      }
      this.renderPeople();
    });
    on('track_muted', () => {
      this.renderPeople();
      for (const id of this.tiles.keys()) this.renderTileState(id);
    });
    on('remote_track', (d) => this.attachRemote(d));
    on('active_speakers', ({ speakers }) => this.renderSpeakers(speakers));
    on('connection_quality', () => this.renderQualities());
    on('video_layer', ({ trackId }) => this.renderVideoLayer(trackId));
    on('media_health', ({ phase, health }) => this.renderMediaHealth(phase, health));
    on('participant_media', ({ participantId }) => {
      this.renderTileState(participantId);
      this.renderPeople();
    });
    on('chat', ({ message }) => this.addChat(message));
    on('media_error', (d) => this.showNotice(`Audio and video are not working right now (${d.message}). Chat still works.`));
    on('error', (d) => this.showNotice(describeError(d)));
  }

  renderAll() {
    for (const p of this.client.participants.values()) this.ensureTile(p.participant_id);
    for (const t of this.client.tracks.values()) if (t.source === 'screen') this.screenTile(t);
    for (const [trackId, track] of this.client.remoteMedia) {
      const info = this.client.tracks.get(trackId);
      if (info) this.attachRemote({ trackId, participantId: info.participant_id, source: info.source, kind: info.kind, track });
    }
    for (const m of this.client.chat) this.addChat(m);
    this.renderMediaHealth(this.client.mediaPhase(), this.client.health);
    this.refreshLocal();
    this.renderPeople();
    this.renderSpeakers(this.client.speakers);
    this.renderQualities();
  }

  // --------------------------------------------------------------- tiles

  ensureTile(participantId) {
    let t = this.tiles.get(participantId);
    if (t) return t;
    const info = this.client.participants.get(participantId);
    if (!info) return null;
    const video = h('video', { autoplay: true, playsInline: true, muted: true });
    const audio = h('audio', { autoplay: true, dataset: { testid: 'remote-audio' } });
    const avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' }, initials(info.display_name));
    const micState = h('span', { class: 'mic-state', dataset: { testid: 'remote-mic-state' } });
    const mediaState = h('span', { class: 'tile-media', hidden: true, dataset: { testid: 'tile-media' } });
    const speaking = speakingPill();
    const quality = qualityBadge();
    const lowQuality = lowQualityLabel();
    const tile = h(
      'figure',
      { class: 'tile', dataset: { testid: 'remote-tile', participantId, source: 'camera', speaking: 'false' } },
      video,
      audio,
      avatar,
      lowQuality,
      h('figcaption', {}, h('span', { class: 'name', dataset: { testid: 'tile-name' } }, info.display_name), badge(info), micState, speaking, mediaState, quality),
    );
    this.grid.append(tile);
    t = { tile, video, audio, avatar, micState, mediaState, speaking, quality, lowQuality };
    this.tiles.set(participantId, t);
    this.renderTileState(participantId);
    this.renderSpeakers(this.client.speakers);
    this.renderQualities();
    return t;
  }

  screenTile(track) {
    if (this.screenTiles.has(track.track_id)) return this.screenTiles.get(track.track_id);
    const owner = this.client.participants.get(track.participant_id);
    const name = owner ? owner.display_name : 'Someone';
    const tile = h(
      'figure',
      {
        class: 'tile screen',
        dataset: { testid: 'remote-tile', participantId: track.participant_id, source: 'screen', trackId: track.track_id },
      },
      h('video', { autoplay: true, playsInline: true, muted: true }),
      lowQualityLabel(),
      h('figcaption', {}, h('span', { class: 'name' }, `${name} is presenting`)),
    );
    this.grid.prepend(tile);
    this.screenTiles.set(track.track_id, tile);
    const media = this.client.remoteMedia.get(track.track_id);
    if (media) attach(tile.querySelector('video'), media);
    this.updateLayout();
    this.renderVideoLayer(track.track_id);
    return tile;
  }

  attachRemote({ trackId, participantId, source, kind, track }) {
    if (source === 'screen') {
      const info = this.client.tracks.get(trackId);
      const tile = info ? this.screenTile(info) : null;
      if (tile) attach(tile.querySelector('video'), track);
      return;
    }
    const t = this.ensureTile(participantId);
    if (!t) return;
    if (kind === 'audio') attach(t.audio, track);
    else this.setVideo(t, track, trackId);
    if (kind === 'video') this.renderVideoLayer(trackId);
    this.renderTileState(participantId);
  }

  /**
   * The layer we receive of a remote video (`video_layer`), as data on its tile's `video`:
   * `data-layer` (0 the smallest), `data-layers`, `data-reduced` (our downlink holds it below
   * what the tile asked for). While it is reduced, the tile (camera or screen share) shows a
   * label, "Low quality: your connection", a polite live region that a screen reader
   * announces once; it goes a few seconds after the layer came back (`LowQualityLabel`), so a
   * wavering link neither blinks it nor has it announced at every change.
   */
  renderVideoLayer(trackId) {
    const v = this.client.videoLayers.get(trackId);
    const info = this.client.tracks.get(trackId);
    if (!v || !info) return;
    const tile = this.tileOf(info);
    if (!tile) return;
    const video = tile.querySelector('video');
    video.dataset.layer = String(v.layer);
    video.dataset.layers = String(v.layers);
    video.dataset.reduced = String(v.reduced);
    let entry = this.lowQuality.get(trackId);
    if (!entry) {
      entry = { label: new LowQualityLabel(), timer: null };
      this.lowQuality.set(trackId, entry);
    }
    entry.label.set(v.reduced, Date.now());
    this.renderLowQuality(trackId);
  }

  /** The tile showing a remote video track: its screen-share tile, or its owner's camera tile. */
  tileOf(info) {
    return info.source === 'screen' ? this.screenTiles.get(info.track_id) : this.tiles.get(info.participant_id)?.tile;
  }

  /** Puts a tile's low-quality label in or out, and wakes again when its hold ends. */
  renderLowQuality(trackId) {
    const entry = this.lowQuality.get(trackId);
    const info = this.client.tracks.get(trackId);
    const el = info ? this.tileOf(info)?.querySelector('[data-testid="tile-low-quality"]') : null;
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.timer = null;
    const { shown, recheckAt } = entry.label.state(Date.now());
    if (el) {
      el.dataset.shown = String(shown);
      // Only a change of words is announced: the text goes in once per low-quality spell.
      if (shown && el.textContent !== LOW_QUALITY_TEXT) el.replaceChildren(LOW_QUALITY_TEXT);
      else if (!shown && el.textContent) el.replaceChildren();
    }
    if (recheckAt !== null) entry.timer = setTimeout(() => this.renderLowQuality(trackId), Math.max(0, recheckAt - Date.now()));
  }

  /** A remote video gone (`info` as it was): its tile's label goes at once. */
  forgetLowQuality(trackId, info) {
    const entry = this.lowQuality.get(trackId);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.lowQuality.delete(trackId);
    const el = this.tileOf(info)?.querySelector('[data-testid="tile-low-quality"]');
    if (el) {
      el.dataset.shown = 'false';
      el.replaceChildren();
    }
  }

  setVideo(t, track, trackId = null) {
    attach(t.video, track);
    this.needs.watch(t.video, track ? trackId : null);
    t.tile.classList.toggle('has-video', Boolean(track));
    this.updateLayout();
  }

  renderTileState(participantId) {
    const t = this.tiles.get(participantId);
    if (!t) return;
    const tracks = [...this.client.tracks.values()].filter((x) => x.participant_id === participantId);
    const mic = tracks.find((x) => x.source === 'microphone');
    const cam = tracks.find((x) => x.source === 'camera');
    // Only say "mic off" when we know: a published microphone that its owner muted.
    const micOff = Boolean(mic && mic.muted);
    t.micState.textContent = micOff ? 'mic off' : '';
    t.micState.hidden = !micOff;
    t.tile.classList.toggle('cam-off', !cam || cam.muted);
    const media = describePeerMedia(this.client.peerMedia.get(participantId));
    // Only trouble is shown on a tile: "no media (failed)" where a face would be.
    t.mediaState.textContent = media && !media.ok ? media.text : '';
    t.mediaState.hidden = !media || media.ok;
    t.mediaState.dataset.state = media ? media.state : 'unknown';
    this.updateLayout();
  }

  /**
   * Who speaks (`active_speakers`, dominant first): their camera tiles, ours included, get
   * `speaking` (a ring and a "speaking" label inside the tile's caption, so a screen reader
   * reading the tile hears it; no live region, which would chatter at every turn) and
   * `data-speaking`; the dominant speaker's tile also gets `dominant`.
   */
  renderSpeakers(speakers) {
    const speaking = new Set((speakers || []).map((s) => s.participant_id));
    const dominant = speakers?.[0]?.participant_id ?? null;
    const tiles = [[this.client.you.participant_id, this.localTile, this.localSpeaking]];
    for (const [id, t] of this.tiles) tiles.push([id, t.tile, t.speaking]);
    for (const [id, tile, pill] of tiles) {
      const on = speaking.has(id);
      tile.dataset.speaking = on ? 'true' : 'false';
      tile.classList.toggle('speaking', on);
      tile.classList.toggle('dominant', on && id === dominant);
      pill.hidden = !on;
    }
    this.updateLayout();
  }

  /**
   * Connection quality (`connection_quality`): a badge on our own camera tile and, for staff
   * (who hear about everyone), on every camera tile; a guest sees only its own. The badge is
   * bars plus, when weak, a word, with the whole state as its accessible name. When our own
   * connection is poor or lost, the notice above the grid says so in words, and that video
   * was reduced to keep audio clear when the gateway reduced it (not while the media alert
   * already says our media is in trouble).
   */
  renderQualities() {
    const c = this.client;
    const of = (id) => c.connectionQualities.get(id) ?? { quality: 'excellent', videoReduced: false, assumed: true };
    const own = of(c.you.participant_id);
    setQuality(this.localQuality, own, true);
    for (const [id, t] of this.tiles) {
      const q = of(id);
      setQuality(t.quality, q, this.staff || !q.assumed);
    }
    const n = this.qualityNotice;
    n.dataset.quality = own.quality;
    n.dataset.videoReduced = own.videoReduced ? 'true' : 'false';
    const text = qualityNoticeText(own, c.mediaPhase());
    const shown = n.firstElementChild;
    if (!text) n.replaceChildren();
    else if (shown?.textContent !== text) n.replaceChildren(h('p', { class: 'notice', dataset: { testid: 'connection-notice-text' } }, text));
  }

  updateLayout() {
    // Someone else's screen takes the stage; our own share stays a small tile (no mirror hall).
    const presenting = this.screenTiles.size > 0;
    this.grid.classList.toggle('presenting', presenting);
    // More than four faces: the dominant speaker's tile grows (two columns, two rows).
    const videos = this.grid.querySelectorAll('.tile.has-video:not(.cam-off):not(.screen):not(.local-screen)').length;
    this.grid.classList.toggle('spotlight', !presenting && videos > 4);
  }

  // ----------------------------------------------------------- controls

  refreshLocal() {
    const c = this.client;
    const mic = c.local.get('microphone');
    const cam = c.local.get('camera');
    const screen = c.local.get('screen');
    setToggle(this.micButton, mic, 'microphone', 'Mic');
    setToggle(this.camButton, cam, 'camera', 'Camera');
    attach(this.localVideo, cam ? cam.track : null);
    this.localTile.classList.toggle('has-video', Boolean(cam));
    this.localTile.classList.toggle('cam-off', !cam || cam.muted);
    if (this.screenButton) {
      this.screenButton.dataset.state = screen ? 'on' : 'off';
      this.screenButton.setAttribute('aria-pressed', screen ? 'true' : 'false');
      this.screenButton.textContent = screen ? 'Stop sharing' : 'Share screen';
      this.screenButton.setAttribute('aria-label', 'Share your screen');
    }
    this.localScreenTile.hidden = !screen;
    attach(this.localScreenVideo, screen ? screen.track : null);
    this.updateLayout();
    this.renderPeople();
  }

  toggle(source) {
    const entry = this.client.local.get(source);
    if (!entry) return;
    this.client.setMuted(source, !entry.muted);
    this.refreshLocal();
  }

  async toggleScreen() {
    const c = this.client;
    if (c.local.get('screen')) {
      const { track } = c.local.get('screen');
      track.stop();
      await this.stopScreen(track);
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
      if (e.name !== 'NotAllowedError') this.showNotice(`Screen sharing could not start (${e.message}).`);
      return;
    }
    const [track] = stream.getVideoTracks();
    track.contentHint = 'detail';
    // The browser's own "Stop sharing" bar ends the track.
    track.addEventListener('ended', () => this.stopScreen(track));
    const started = c.setLocalTrack('screen', track);
    this.refreshLocal();
    await started.catch(() => {});
  }

  async stopScreen(track) {
    const c = this.client;
    if (c.local.get('screen')?.track !== track) return;
    const done = c.setLocalTrack('screen', null);
    this.refreshLocal();
    await done.catch(() => {});
  }

  /** Own media: the status line, and the alert while there is trouble (with a retry once it gave up). */
  renderMediaHealth(phase, health) {
    const { status, problem } = phaseMessage(phase, health);
    const paths = [...new Set(Object.values(health).filter((x) => x.exists && x.path).map((x) => x.path))];
    this.mediaStatus.textContent = status;
    this.mediaStatus.dataset.phase = phase;
    this.mediaStatus.dataset.path = phase === 'connected' ? paths.join(' ') : '';
    this.mediaStatus.classList.toggle('trouble', Boolean(problem));
    const shown = this.mediaAlert.firstElementChild;
    if (!problem) {
      this.mediaAlert.replaceChildren();
    } else if (!shown || shown.dataset.phase !== phase) {
      const box = h('div', { class: `media-problem ${phase}`, dataset: { testid: 'media-problem', phase } },
        h('p', { dataset: { testid: 'media-problem-text' } }, problem));
      if (phase === 'failed') {
        box.append(h('button', {
          type: 'button',
          class: 'small',
          dataset: { testid: 'media-retry-button' },
          onclick: () => this.client.restartIce(),
        }, 'Try again'));
      }
      this.mediaAlert.replaceChildren(box);
    }
    this.renderPeople();
    this.renderQualities();
  }

  /**
   * Moves focus into the call (the view that had it is gone): to its first control that
   * can take it (the mic, or the camera, screen or Leave when a device is missing).
   */
  focusFirstControl() {
    const first = [this.micButton, this.camButton, this.screenButton, this.leaveButton].find((b) => b && !b.disabled);
    first?.focus({ preventScroll: true });
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  // --------------------------------------------------------- people, chat

  renderPeople() {
    const c = this.client;
    const people = [c.you, ...c.participants.values()];
    this.peopleCount.textContent = `(${people.length})`;
    const items = people.map((p) => {
      const self = p.participant_id === c.you.participant_id;
      const tracks = [...c.tracks.values()].filter((t) => t.participant_id === p.participant_id);
      const presenting = self ? c.local.has('screen') : tracks.some((t) => t.source === 'screen');
      const media = self ? ownMedia(c) : describePeerMedia(c.peerMedia.get(p.participant_id));
      const li = h(
        'li',
        { dataset: { testid: 'participant-entry', participantId: p.participant_id, kind: p.kind } },
        h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(p.display_name)),
        h('span', { class: 'name' }, self ? `${p.display_name} (you)` : p.display_name),
        badge(p),
        presenting ? h('span', { class: 'pill' }, 'presenting') : null,
        media
          ? h('span', { class: `media-pill ${media.state}`, dataset: { testid: 'participant-media', state: media.state } }, media.text)
          : null,
      );
      if (this.staff && !self && !p.organizer) li.append(this.removeButton(p));
      return li;
    });
    this.peopleList.replaceChildren(...items);
    this.aloneNote.hidden = c.participants.size > 0;
  }

  removeButton(p) {
    const button = h('button', {
      type: 'button',
      class: 'small danger-outline',
      dataset: { testid: 'remove-button', participantId: p.participant_id },
      'aria-label': `Remove ${p.display_name} from the call`,
    }, 'Remove');
    button.addEventListener('click', () => {
      if (button.dataset.confirm === 'yes') {
        this.client.remove(p.participant_id);
        button.disabled = true;
        return;
      }
      button.dataset.confirm = 'yes';
      button.textContent = 'Confirm remove';
    });
    return button;
  }

  addChat(message) {
    const mine = message.participant_id === this.client.you.participant_id;
    const time = new Date(message.sent_at_ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const li = h(
      'li',
      { class: mine ? 'mine' : '', dataset: { testid: 'chat-message', seq: message.seq, participantId: message.participant_id } },
      h('div', { class: 'meta' }, h('span', { class: 'author', dataset: { testid: 'chat-author' } }, mine ? 'You' : message.display_name), ' ', h('time', {}, time)),
      h('div', { class: 'text', dataset: { testid: 'chat-text' } }, message.text),
    );
    this.chatList.append(li);
    li.scrollIntoView({ block: 'nearest' });
  }

  destroy() {
    this.needs.disconnect();
    for (const { timer } of this.lowQuality.values()) clearTimeout(timer);
    this.lowQuality.clear();
    for (const [type, handler] of this.listeners) this.client.removeEventListener(type, handler);
    this.listeners = [];
    this.root.remove();
  }
}

/** Our own media in the participant list, in the words staff see for others. */
function ownMedia(client) {
  const phase = client.mediaPhase();
  if (phase === 'idle') return null;
  if (phase === 'connected') {
    const path = client.health.publisher.path || client.health.subscriber.path;
    return describePeerMedia({ publisher: { state: 'connected', path } });
  }
  if (phase === 'connecting') return { ok: false, state: 'connecting', text: 'connecting media…' };
  const why = { failed: 'failed', blocked: 'blocked' }[phase] || 'reconnecting';
  return { ok: false, state: 'no-media', text: `no media (${why})` };
}

/** A camera tile's connection quality badge (see `CallView.renderQualities`). */
function qualityBadge() {
  return h(
    'span',
    { class: 'quality', role: 'img', hidden: true, dataset: { testid: 'tile-quality', quality: 'excellent' } },
    h('span', { class: 'bar' }),
    h('span', { class: 'bar' }),
    h('span', { class: 'bar' }),
    h('span', { class: 'quality-word' }),
  );
}

function setQuality(el, q, shown) {
  const { name, word } = describeQuality(q);
  el.hidden = !shown;
  el.dataset.quality = q.quality;
  el.dataset.videoReduced = q.videoReduced ? 'true' : 'false';
  el.setAttribute('aria-label', name);
  el.title = name;
  el.querySelector('.quality-word').textContent = word;
}

/**
 * A remote video tile's low-quality label (see `CallView.renderVideoLayer`): a polite live
 * region that stays in the page, empty (and invisible) while the video is not reduced.
 */
function lowQualityLabel() {
  return h('span', {
    class: 'low-quality',
    role: 'status',
    'aria-live': 'polite',
    'aria-atomic': 'true',
    dataset: { testid: 'tile-low-quality', shown: 'false' },
  });
}

/** The "speaking" label of a camera tile's caption; shown while its owner speaks. */
function speakingPill() {
  return h('span', { class: 'speaking-pill', hidden: true, dataset: { testid: 'tile-speaking' } }, 'speaking');
}

function badge(info) {
  return h('span', { class: `badge ${info.organizer ? 'host' : info.kind}`, dataset: { testid: 'participant-kind' } }, kindLabel(info));
}

function attach(el, track) {
  const current = el.srcObject?.getTracks?.()[0] ?? null;
  if (current === track) return;
  el.srcObject = track ? new MediaStream([track]) : null;
  if (track) el.play?.().catch(() => {});
}

function setToggle(button, entry, what, label) {
  if (!entry) {
    button.disabled = true;
    button.dataset.state = 'unavailable';
    button.textContent = `${label} unavailable`;
    button.setAttribute('aria-label', `No ${what} available`);
    button.removeAttribute('aria-pressed');
    return;
  }
  button.disabled = false;
  const on = !entry.muted;
  button.dataset.state = on ? 'on' : 'off';
  button.setAttribute('aria-pressed', on ? 'true' : 'false');
  button.textContent = on ? `${label} on` : `${label} off`;
  // A stable name with a pressed state: "Microphone, toggle button, pressed".
  button.setAttribute('aria-label', what[0].toUpperCase() + what.slice(1));
}
