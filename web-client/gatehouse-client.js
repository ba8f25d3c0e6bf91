/**
 * gatehouse-client.js: the browser side of the Gatehouse signaling protocol.
 *
 * One `GatehouseClient` is one participant: a signaling WebSocket (JSON frames
 * with a `type` tag, see docs/PROTOCOL.md) and, once in the call, two
 * RTCPeerConnections. On the *publisher* connection the browser offers its own
 * tracks (microphone, camera, screen); on the *subscriber* connection the
 * server offers everyone else's. Each connection has exactly one offerer, so
 * there is no glare; negotiations on one connection run one after the other.
 *
 * The client is an EventTarget. Every event is a CustomEvent whose `detail`
 * is listed in docs/WEB-CLIENT.md ("The client module"). Nothing here touches
 * the DOM, so both pages (and tests) use it the same way.
 *
 *   const client = new GatehouseClient({ token, meetingId });
 *   client.addEventListener('admitted', (e) => ...);
 *   await client.connect();              // resolves on `joined`
 *   client.setLocalTrack('camera', track);
 *   client.sendChat('hello');
 */

import { mediaPhase, reportOf, selectedPair } from './media-status.js';

export const PROTOCOL_VERSION = 1;

/** How long we wait for the server's answer to a publisher offer. */
const NEGOTIATION_TIMEOUT_MS = 15000;
/** Keep-alive period; a socket silent for three periods is treated as dropped. */
const PING_INTERVAL_MS = 15000;
/**
 * When media goes down, the signaling socket must answer a ping within this long, or it
 * is taken for dead: a network change (a new address) leaves it half-open, and nothing
 * else would tell the browser for minutes.
 */
const SIGNALING_PROBE_MS = 2000;
/**
 * Media received on a connected subscriber stops for this long: the signaling socket is
 * probed (the network may have changed under both; the browser itself takes about 5 s
 * to call a dead path disconnected). At most once per STALL_PROBE_EVERY_MS. Audio alone
 * is 50 packets a second (Opus without DTX, as browsers send it), so half a second of
 * nothing is no jitter; a false alarm costs a ping and a spare socket closed unused.
 * Inbound media is sampled every INBOUND_SAMPLE_MS.
 */
const INBOUND_STALL_MS = 500;
const INBOUND_SAMPLE_MS = 125;
/**
 * A spare socket (opened beside the old one as the probe goes) has opened, so the network
 * works: the old socket and media get this long more to show life before the old socket
 * is taken for dead (a pong is one round trip, the spare's handshake took three). After an
 * outage, media on the old path can take over 100 ms to come back (docs/BENCHMARKS.md §5):
 * a shorter grace would renegotiate what was about to recover by itself.
 */
const SPARE_GRACE_MS = 400;
/** A probe answered slower than this ended an outage: restarts wait OUTAGE_GRACE_MS first. */
const SLOW_PROBE_MS = 1000;
const OUTAGE_GRACE_MS = 1500;
const STALL_PROBE_EVERY_MS = 10000;
/** Back-off between reconnect attempts after an unexpected drop (then gives up). */
const RECONNECT_DELAYS_MS = [300, 1000, 2000, 4000, 8000, 8000, 8000, 8000];
/**
 * On entering a call where others already publish, our own publisher offer waits for the
 * first subscriber answer (at most this long): the browser then works on the connection
 * that shows the others first, and the two negotiations do not compete.
 */
const PUBLISH_AFTER_SUBSCRIBE_MAX_MS = 400;
/**
 * On entering a call where others already publish, the `admitted` event (on which pages
 * draw the call view, 30 to 150 ms of main thread in Chromium) waits until the server's
 * subscriber offer has been handed to the browser, at most this long: the browser then
 * applies the offer while the page draws, instead of after (docs/BENCHMARKS.md §4).
 */
const ADMITTED_HOLD_MAX_MS = 150;
/**
 * The camera is sent as three simulcast layers (rids `q`, `h`, `f`: a quarter, half and full
 * resolution, lowest first as the server ranks them) so that the gateway can give every
 * subscriber the one its tile needs (`setQuality`); a screen is one layer. The bitrate caps
 * are those of LiveKit's default presets for 180p, 360p and 720p.
 */
const CAMERA_SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_700_000 },
];
/**
 * Asks a sender to keep its resolution and drop frames first under constraint
 * (`degradationPreference`), where the browser supports setting it; best effort.
 */
async function keepResolution(sender) {
  try {
    const params = sender.getParameters();
    if (params.degradationPreference === 'maintain-resolution') return;
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params);
  } catch {
    // Not supported here (the content hint says the same to the encoder).
  }
}

/**
 * A screen is sent with temporal layers where the browser can (best first): a subscriber
 * whose downlink cannot take the whole screen share then gets its lower layers only, every
 * other or every fourth frame at full resolution, instead of losing packets (the gateway
 * leaves out the frames above each subscriber's cap: docs/ARCHITECTURE.md, Temporal layers).
 */
const SCREEN_SCALABILITY_MODES = ['L1T3', 'L1T2'];

/**
 * Asks a screen's sender for temporal layers (`scalabilityMode`), the first mode the browser
 * takes; best effort: a browser that refuses them all sends one layer, as before.
 */
async function temporalLayers(sender) {
  for (const mode of SCREEN_SCALABILITY_MODES) {
    try {
      const params = sender.getParameters();
      const encoding = params.encodings?.[0];
      if (!encoding) return;
      if (encoding.scalabilityMode === mode) return;
      encoding.scalabilityMode = mode;
      await sender.setParameters(params);
      if (sender.getParameters().encodings?.[0]?.scalabilityMode === mode) return;
    } catch {
      // Not this mode here: the next, or none.
    }
  }
}

/** A connection not connected this long after its negotiation is treated as blocked: restart ICE. */
const MEDIA_CONNECT_TIMEOUT_MS = 4000;
/** An ICE restart that has not connected in this long is followed by another. */
const MEDIA_RESTART_TIMEOUT_MS = 6000;
/** ICE restarts per connection before the client gives up and says what to try. */
const MEDIA_MAX_RESTARTS = 3;
/** How long a publisher restart waits for fresh ICE servers (`ice_servers`) before going ahead with what it has. */
const ICE_SERVERS_WAIT_MS = 1000;
/** Changes of media state within this long are reported to the server as one `media_status`. */
const MEDIA_REPORT_DELAY_MS = 200;
/** Server error codes that are about media rather than the meeting. */
const MEDIA_ERROR_CODES = new Set([
  'media_state_error',
  'invalid_sdp',
  'invalid_candidate',
  'presenting_not_allowed',
]);

/** The default signaling address: the page's own host. */
export function defaultSocketUrl(loc = window.location) {
  return `${loc.protocol === 'http:' ? 'ws' : 'wss'}://${loc.host}/ws`;
}

/** A settled-or-not promise with its resolve/reject handles. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** An error as the server sends it: a stable `code` and a human `message`. */
export class GatehouseError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'GatehouseError';
    this.code = code;
  }
}

/**
 * Runs async jobs one at a time, in order. A failed job does not stop the
 * next one; its caller sees the failure.
 */
class SerialQueue {
  constructor() {
    this.tail = Promise.resolve();
  }
  run(job) {
    const result = this.tail.then(job);
    this.tail = result.catch(() => {});
    return result;
  }
}

export class GatehouseClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.token       guest token from link redemption, or a staff token
   * @param {string} [options.meetingId] required for staff, optional for guests
   * @param {string} [options.url]       signaling URL, defaults to wss://<this host>/ws
   * @param {boolean} [options.reconnect] rejoin after an unexpected drop (default true)
   * @param {WebSocket} [options.socket] a socket to `url` already opening (made before the
   *   token was at hand, to save its handshake); `connect()` joins on it
   * @param {boolean} [options.simulcast] send the camera as three layers (default true; false
   *   sends one)
   */
  constructor({ token, meetingId = null, url = defaultSocketUrl(), reconnect = true, socket = null, simulcast = true }) {
    super();
    this.simulcast = simulcast;
    /** The quality asked for of each remote track (`setQuality`); absent means the server's default, high. */
    this.qualities = new Map();
    this.earlySocket = socket;
    this.token = token;
    this.meetingId = meetingId;
    this.url = url;
    this.reconnectEnabled = reconnect;

    /** 'idle' | 'connecting' | 'lobby' | 'call' | 'reconnecting' | 'left' */
    this.state = 'idle';
    /** Our ParticipantInfo, from `joined`. */
    this.you = null;
    /** MeetingSummary, from `joined`. */
    this.meeting = null;
    /** The last `lobby` frame: { status, timeout_secs }. */
    this.lobby = null;
    /** Staff: the lobby entries from the last `lobby_update`. */
    this.lobbyEntries = [];
    /** Everyone else in the call: participant_id -> ParticipantInfo. */
    this.participants = new Map();
    /** Everyone else's published tracks: track_id -> TrackInfo. */
    this.tracks = new Map();
    /** Remote media that arrived and is bound to a TrackInfo: track_id -> MediaStreamTrack. */
    this.remoteMedia = new Map();
    /** Chat messages received in this call. */
    this.chat = [];
    /** Why we left, once `left` arrived or reconnecting gave up: { reason, message }. */
    this.leftWith = null;
    this.iceServers = [];
    /** The last few media failures ({ role, code, message }), for stats() and support. */
    this.mediaErrors = [];

    /** Our own tracks: source -> { track, muted, transceiver, serverTrackId }. */
    this.local = new Map();
    this.publisher = null;
    this.subscriber = null;
    this.publisherQueue = new SerialQueue();
    this.subscriberQueue = new SerialQueue();
    /** The publisher offer waiting for `publish_answer`. */
    this.pendingPublish = null;
    /** Others' media as they report it (`participant_media`): participant_id -> {publisher, subscriber}. */
    this.peerMedia = new Map();
    /** Who speaks now (`active_speakers`): [{ participant_id, track_id, level }], dominant first. */
    this.speakers = [];
    /**
     * Connection quality (`connection_quality`): participant_id -> { quality, videoReduced },
     * ours and (for staff) everyone's; absent means the assumed `excellent`.
     */
    this.connectionQualities = new Map();
    /** The layer we receive of each remote video track (`video_layer`): track_id -> { layer, layers, reduced }. */
    this.videoLayers = new Map();
    /** A ping in flight to prove the socket (`probeSignaling`), when it went, and the roles whose restart waits for it. */
    this.signalingProbe = null;
    this.probeSentAt = 0;
    this.probeWaiting = new Set();
    /** A `restart_ice` was sent: offers for the old subscriber connection are ignored until the `restart` one. */
    this.subscriberRestartPending = false;
    this.resetHealth();

    this.ws = null;
    this.intentionalClose = false;
    this.everJoined = false;
    this.reconnectAttempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.resetMediaState();
  }

  // ---------------------------------------------------------------- events

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state });
  }

  // ------------------------------------------------------------ connection

  /**
   * Opens the socket and joins. Resolves with { you, meeting } on `joined`;
   * rejects with a GatehouseError if the server refuses (expired token,
   * meeting ended, meeting full, ...) or the socket cannot open.
   */
  connect() {
    this.intentionalClose = false;
    this.setState('connecting');
    const early = this.earlySocket;
    this.earlySocket = null;
    return this.openSocket(early);
  }

  /**
   * Opens the signaling socket (or takes `adopt`, a socket to our URL already open or
   * opening) and sends `join` on it once open.
   */
  openSocket(adopt = null) {
    const joined = deferred();
    this.joinWaiter = joined;
    let ws = [WebSocket.CONNECTING, WebSocket.OPEN].includes(adopt?.readyState) ? adopt : null;
    try {
      ws ??= new WebSocket(this.url);
    } catch (e) {
      joined.reject(new GatehouseError('connection_failed', String(e)));
      return joined.promise;
    }
    this.ws = ws;
    const opened = () => {
      const join = { type: 'join', protocol: PROTOCOL_VERSION, token: this.token };
      if (this.meetingId) join.meeting_id = this.meetingId;
      this.sendRaw(join);
      this.lastFrameAt = Date.now();
      this.startPing();
    };
    if (ws.readyState === WebSocket.OPEN) opened();
    else ws.addEventListener('open', opened);
    ws.addEventListener('message', (ev) => {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      this.signalingAnswered();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.handle(msg);
    });
    ws.addEventListener('close', (ev) => {
      if (ws === this.ws) this.onSocketClosed(ev);
    });
    return joined.promise;
  }

  /**
   * The socket ended (or was given up); `now`: reconnect without the first back-off, over
   * `adopt` (a spare socket already open) when given.
   */
  onSocketClosed(ev, { now = false, adopt = null } = {}) {
    this.stopPing();
    this.ws = null;
    const waiter = this.joinWaiter;
    this.joinWaiter = null;
    if (this.intentionalClose || this.state === 'left') {
      waiter?.reject(new GatehouseError('closed', 'the connection was closed'));
      return;
    }
    this.teardownMedia();
    if (!this.everJoined) {
      // Never got in: nothing to resume. The caller shows the error.
      this.setState('idle');
      waiter?.reject(
        this.refusal || new GatehouseError('connection_failed', `could not reach the server (code ${ev.code})`),
      );
      return;
    }
    if (this.refusal) {
      // The server refused a rejoin (token expired, meeting ended, ...): that is final.
      waiter?.reject(this.refusal);
      this.finish(refusalReason(this.refusal.code), this.refusal.message);
      return;
    }
    waiter?.reject(new GatehouseError('connection_lost', 'the connection dropped'));
    if (!this.reconnectEnabled || this.reconnectAttempt >= RECONNECT_DELAYS_MS.length) {
      this.finish('disconnected', 'The connection to the meeting was lost.');
      return;
    }
    const delay = now && this.reconnectAttempt === 0 ? 0 : RECONNECT_DELAYS_MS[this.reconnectAttempt];
    this.reconnectAttempt += 1;
    this.setState('reconnecting');
    this.emit('connection', { state: 'reconnecting', attempt: this.reconnectAttempt, delayMs: delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.openSocket(adopt).then(
        () => {
          this.reconnectAttempt = 0;
          this.emit('connection', { state: 'restored' });
        },
        () => {}, // the close handler schedules the next attempt
      );
    }, delay);
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastFrameAt > PING_INTERVAL_MS * 3) {
        // Half-open socket: nothing has come back for a long time.
        this.ws.close();
        return;
      }
      this.sendRaw({ type: 'ping', nonce: Date.now() });
    }, PING_INTERVAL_MS);
    this.inboundTimer = setInterval(() => this.watchInbound().catch(() => {}), INBOUND_SAMPLE_MS);
    // The browser's own word that the network changed (a new connection type, back online):
    // probe at once rather than waiting for media to stall.
    if (!this.networkWatch) {
      this.networkWatch = () => {
        if (this.state === 'call') this.probeSignaling();
      };
      window.addEventListener('online', this.networkWatch);
      navigator.connection?.addEventListener?.('change', this.networkWatch);
    }
  }

  /**
   * Notes when media last arrived (`inbound.at`: the old path's sign of life, see
   * `aliveSince`), whatever the browser calls the connection meanwhile: after an outage
   * media comes back before ICE says `connected` again. Probes signaling when media that
   * was arriving stops on a connected subscriber (see INBOUND_STALL_MS).
   */
  async watchInbound() {
    const pc = this.subscriber;
    if (!pc || this.state !== 'call') return;
    let bytes = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') bytes += r.bytesReceived || 0;
    });
    const now = Date.now();
    if (pc !== this.inbound?.pc || bytes > this.inbound.bytes) {
      this.inbound = { pc, bytes, at: now };
      return;
    }
    const connected = this.health?.subscriber?.state === 'connected';
    const stalled = connected && bytes > 0 && now - this.inbound.at > INBOUND_STALL_MS;
    if (stalled && now - (this.lastStallProbe || 0) > STALL_PROBE_EVERY_MS) {
      this.lastStallProbe = now;
      this.probeSignaling();
    }
  }

  stopPing() {
    if (this.networkWatch) {
      window.removeEventListener('online', this.networkWatch);
      navigator.connection?.removeEventListener?.('change', this.networkWatch);
      this.networkWatch = null;
    }
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    clearInterval(this.inboundTimer);
    this.inboundTimer = null;
    clearTimeout(this.signalingProbe);
    this.signalingProbe = null;
    this.probeWaiting?.clear();
  }

  /**
   * Media went down: is the signaling socket still alive? It must answer a ping within
   * SIGNALING_PROBE_MS (any frame will do); then the roles waiting in `restartAfter`
   * restart ICE over it. A spare socket is opened at the same time (`trySpareSocket`):
   * after a network change it opens while the old socket stays silent, and the client
   * rejoins over it at once instead of waiting out the probe.
   */
  probeSignaling(restartAfter = null) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (restartAfter) this.probeWaiting.add(restartAfter);
    if (this.signalingProbe) return;
    const sentAt = Date.now();
    this.probeSentAt = sentAt;
    this.sendRaw({ type: 'ping', nonce: sentAt });
    this.signalingProbe = setTimeout(() => {
      this.signalingProbe = null;
      this.probeWaiting.clear();
    }, SIGNALING_PROBE_MS);
    this.trySpareSocket(ws, sentAt);
  }

  /** A frame arrived: a pending probe is answered, and the restarts it held go ahead. */
  signalingAnswered() {
    if (!this.signalingProbe || this.lastFrameAt < this.probeSentAt) return;
    clearTimeout(this.signalingProbe);
    this.signalingProbe = null;
    const roles = [...this.probeWaiting];
    this.probeWaiting.clear();
    const slow = Date.now() - this.probeSentAt > SLOW_PROBE_MS;
    for (const role of roles) {
      const restart = () => {
        if (this.health?.[role]?.state !== 'connected') this.recoverMedia(role, { proven: true });
      };
      // A slow answer means signaling was cut too (an outage has just ended), and a
      // `disconnected` connection may come back by itself once consent checks get
      // through again: give either that chance before restarting.
      if (slow || this.health?.[role]?.state === 'disconnected') setTimeout(restart, OUTAGE_GRACE_MS);
      else restart();
    }
  }

  /** Whether the old path has shown life since `since`: a frame on the socket, or media. */
  aliveSince(since) {
    return this.lastFrameAt >= since || (this.inbound?.at ?? 0) > since;
  }

  /**
   * The socket `old` is being probed (a ping sent at `since`). A network change leaves
   * it half-open for good; an outage may give it (and the media path) back. So nothing
   * is torn down yet: a spare socket is opened beside it, every second until one opens.
   * Once one opens, the network works: if the old path shows life (a frame on the old
   * socket, or media arriving) by then or within SPARE_GRACE_MS, it is kept and the spare
   * closed unused; otherwise the old socket is given up and the client rejoins at once
   * over the spare with its held seat, renegotiating all media on the network it has now.
   */
  trySpareSocket(old, since) {
    if (old !== this.ws || this.lastFrameAt >= since || this.spareSocket) return;
    let spare;
    try {
      spare = new WebSocket(this.url);
    } catch {
      return;
    }
    this.spareSocket = spare;
    const done = () => {
      if (this.spareSocket === spare) this.spareSocket = null;
    };
    spare.addEventListener('open', async () => {
      done();
      if (old === this.ws && !this.aliveSince(since)) {
        await new Promise((resolve) => setTimeout(resolve, SPARE_GRACE_MS));
        await this.watchInbound().catch(() => {});
      }
      if (old !== this.ws || this.aliveSince(since)) spare.close(1000, 'spare');
      if (old !== this.ws) return;
      if (this.aliveSince(since)) {
        // Only a probe that went unanswered for long means an outage; a quick answer is
        // handled by `signalingAnswered`.
        if (this.lastFrameAt >= since && this.lastFrameAt - since < SLOW_PROBE_MS) return;
        // The old path is back after an outage: what is still down gets the grace a slow
        // probe answer gives (see signalingAnswered), then restarts over the old socket.
        setTimeout(() => {
          for (const role of ['publisher', 'subscriber']) {
            if (this[role] && this.health?.[role]?.state !== 'connected') this.recoverMedia(role);
          }
        }, OUTAGE_GRACE_MS);
        return;
      }
      this.onSocketClosed({ code: 4001, reason: 'signaling did not answer' }, { now: true, adopt: spare });
      try {
        old.close();
      } catch {
        // already closing
      }
    });
    spare.addEventListener('close', () => {
      if (this.spareSocket !== spare) return;
      done();
      setTimeout(() => this.trySpareSocket(old, since), 1000);
    });
  }

  sendRaw(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends a frame; throws when there is no open socket. */
  send(msg) {
    if (!this.sendRaw(msg)) throw new GatehouseError('not_connected', 'not connected to the meeting');
  }

  /** Test hook: drop the socket as a network failure would (no `leave`). */
  simulateDrop() {
    this.ws?.close(4000, 'simulated drop');
  }

  /** Leaves the lobby or the call. The server answers `left` and closes. */
  leave() {
    if (this.state === 'left') return;
    this.intentionalClose = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (!this.sendRaw({ type: 'leave' })) {
      this.finish('left', null);
      return;
    }
    // If the server's `left` does not come quickly, close anyway.
    setTimeout(() => {
      if (this.state !== 'left') {
        this.ws?.close();
        this.finish('left', null);
      }
    }, 1500);
  }

  /** We are out for good: close everything and tell listeners once. */
  finish(reason, message) {
    if (this.state === 'left') return;
    this.leftWith = { reason, message: message ?? null };
    this.intentionalClose = true;
    this.stopPing();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.teardownMedia();
    this.ws?.close();
    this.ws = null;
    this.setState('left');
    this.emit('left', this.leftWith);
  }

  // ----------------------------------------------------------- staff actions

  admit(participantId) {
    this.send({ type: 'admit', participant_id: participantId });
  }
  admitAll() {
    this.send({ type: 'admit_all' });
  }
  deny(participantId, reason) {
    const msg = { type: 'deny', participant_id: participantId };
    if (reason && reason.trim()) msg.reason = reason.trim();
    this.send(msg);
  }
  remove(participantId, reason) {
    const msg = { type: 'remove', participant_id: participantId };
    if (reason && reason.trim()) msg.reason = reason.trim();
    this.send(msg);
  }
  endMeeting() {
    this.send({ type: 'end_meeting' });
  }
  sendChat(text) {
    this.send({ type: 'chat', text });
  }

  // -------------------------------------------------------- incoming frames

  handle(msg) {
    switch (msg.type) {
      case 'joined': {
        this.refusal = null;
        this.everJoined = true;
        this.you = msg.you;
        this.meeting = msg.meeting;
        const waiter = this.joinWaiter;
        this.joinWaiter = null;
        this.emit('joined', { you: msg.you, meeting: msg.meeting });
        waiter?.resolve({ you: msg.you, meeting: msg.meeting });
        break;
      }
      case 'lobby':
        this.lobby = { status: msg.status, timeout_secs: msg.timeout_secs };
        this.setState('lobby');
        this.emit('lobby', { status: msg.status, timeoutSecs: msg.timeout_secs });
        break;
      case 'admitted': {
        this.participants = new Map(msg.participants.map((p) => [p.participant_id, p]));
        this.tracks = new Map(msg.tracks.map((t) => [t.track_id, t]));
        this.iceServers = msg.ice_servers || [];
        this.chat = [];
        this.peerMedia = new Map();
        this.speakers = [];
        this.connectionQualities = new Map();
        this.videoLayers = new Map();
        this.lastMediaReport = null;
        this.setState('call');
        const othersPublish = msg.tracks.some((t) => t.participant_id !== this.you?.participant_id);
        this.holdAdmitted({ participants: msg.participants, tracks: msg.tracks }, othersPublish);
        if (this.local.size > 0) this.publishOnEntry(othersPublish);
        break;
      }
      case 'queue_position':
        // A guest waiting for an appointment: their place in its queue (PROTOCOL §15.7).
        this.emit('queue_position', { position: msg.position, estimatedWaitSecs: msg.estimated_wait_secs });
        break;
      case 'lobby_update':
        this.lobbyEntries = msg.entries;
        this.emit('lobby_update', { entries: msg.entries });
        break;
      case 'participant_joined':
        if (msg.participant.participant_id === this.you?.participant_id) break;
        this.participants.set(msg.participant.participant_id, msg.participant);
        this.emit('participant_joined', { participant: msg.participant });
        break;
      case 'participant_left': {
        this.participants.delete(msg.participant_id);
        this.peerMedia.delete(msg.participant_id);
        this.connectionQualities.delete(msg.participant_id);
        for (const [id, t] of this.tracks) {
          if (t.participant_id === msg.participant_id) this.dropRemoteTrack(id);
        }
        this.emit('participant_left', { participantId: msg.participant_id, reason: msg.reason });
        break;
      }
      case 'chat':
        this.chat.push(msg.message);
        this.emit('chat', { message: msg.message });
        break;
      case 'left':
        this.finish(msg.reason, msg.message);
        break;
      case 'pong':
        break;
      case 'ice_servers':
        // Fresh TURN credentials (PROTOCOL.md §11.6, §11.7): for both connections now
        // and for every connection made from here on.
        this.applyIceServers(msg.ice_servers || []);
        break;
      case 'publish_answer':
        if (this.pendingPublish) this.pendingPublish.resolve(msg.sdp);
        break;
      case 'subscribe_offer':
        // After `restart_ice`, offers made for the old connection are moot (PROTOCOL.md §11.6).
        if (this.subscriberRestartPending && !msg.restart) break;
        if (msg.restart) this.subscriberRestartPending = false;
        this.subscriberQueue
          .run(() => this.answerSubscriber(msg.sdp, Boolean(msg.restart)))
          .catch((e) => this.mediaError('subscriber', e));
        break;
      case 'participant_media': {
        const report = { publisher: msg.publisher, subscriber: msg.subscriber };
        this.peerMedia.set(msg.participant_id, report);
        this.emit('participant_media', { participantId: msg.participant_id, ...report });
        break;
      }
      case 'ice_candidate':
        this.addRemoteCandidate(msg.target, msg.candidate);
        break;
      case 'track_published':
        this.onTrackPublished(msg.track);
        break;
      case 'track_unpublished':
        if (msg.participant_id === this.you?.participant_id) {
          for (const entry of this.local.values()) {
            if (entry.serverTrackId === msg.track_id) entry.serverTrackId = null;
          }
          break;
        }
        this.dropRemoteTrack(msg.track_id);
        break;
      case 'publisher_layers':
        this.applyPublisherLayers(msg.track_id, msg.layers);
        break;
      case 'active_speakers':
        this.speakers = Array.isArray(msg.speakers) ? msg.speakers : [];
        this.emit('active_speakers', { speakers: this.speakers });
        break;
      case 'connection_quality': {
        const q = { quality: msg.quality, videoReduced: Boolean(msg.video_reduced) };
        this.connectionQualities.set(msg.participant_id, q);
        this.emit('connection_quality', { participantId: msg.participant_id, ...q });
        break;
      }
      case 'video_layer': {
        const v = { layer: msg.layer, layers: msg.layers, reduced: Boolean(msg.reduced) };
        this.videoLayers.set(msg.track_id, v);
        this.emit('video_layer', { trackId: msg.track_id, ...v });
        break;
      }
      case 'track_muted': {
        const t = this.tracks.get(msg.track_id);
        if (t) t.muted = msg.muted;
        this.emit('track_muted', { trackId: msg.track_id, participantId: msg.participant_id, muted: msg.muted });
        break;
      }
      case 'error':
        this.onServerError(msg.code, msg.message);
        break;
      default:
        break;
    }
  }

  onServerError(code, message) {
    const err = new GatehouseError(code, message);
    if (this.joinWaiter) {
      // A refused join: the server closes the socket right after this frame.
      this.refusal = err;
      return;
    }
    if (MEDIA_ERROR_CODES.has(code)) {
      if (this.pendingPublish) {
        this.pendingPublish.reject(err);
      } else {
        this.mediaError(null, err);
      }
      return;
    }
    this.emit('error', { code, message });
  }

  // ------------------------------------------------------------ local media

  /**
   * Publishes, replaces or (with `track = null`) unpublishes our track for a
   * source: 'microphone' | 'camera' | 'screen'. Before the call the track is
   * kept and published on admission. Replacing a track of the same source
   * needs no renegotiation. Resolves once the server has answered.
   */
  async setLocalTrack(source, track, { muted = false } = {}) {
    const entry = this.local.get(source);
    if (track && entry) {
      entry.track = track;
      track.enabled = !entry.muted;
      if (entry.transceiver) await entry.transceiver.sender.replaceTrack(track);
      return;
    }
    if (track) {
      track.enabled = !muted;
      this.local.set(source, { track, muted, transceiver: null, serverTrackId: null });
      if (this.state === 'call') await this.negotiatePublisher();
      return;
    }
    if (!entry) return;
    this.local.delete(source);
    if (entry.transceiver && this.publisher) {
      try {
        this.publisher.removeTrack(entry.transceiver.sender);
      } catch {
        // the connection is already closed
      }
      if (this.state === 'call') await this.negotiatePublisher();
    }
  }

  /** Mutes or unmutes our track of a source: disables it and tells the server. */
  setMuted(source, muted) {
    const entry = this.local.get(source);
    if (!entry) return;
    entry.muted = muted;
    entry.track.enabled = !muted;
    if (entry.serverTrackId) this.sendRaw({ type: 'mute_track', track_id: entry.serverTrackId, muted });
  }

  /**
   * Says how much of a remote video track this page needs (`set_subscription.quality`):
   * 'high', 'medium', 'low', or 'off' for a tile nobody sees (nothing is forwarded then).
   * Sent only when it changes; asked for again when the track arrives on a new subscriber
   * connection (a reconnect starts its legs at 'high').
   */
  setQuality(trackId, quality) {
    if ((this.qualities.get(trackId) ?? 'high') === quality) return;
    this.qualities.set(trackId, quality);
    if (this.state === 'call') this.sendRaw({ type: 'set_subscription', track_id: trackId, quality });
  }

  /**
   * The gateway says which simulcast layers of one of our tracks someone needs
   * (`publisher_layers`, docs/PROTOCOL.md): the encodings nobody needs stop (`active`
   * false), saving this device's CPU and uplink, and start again when asked. Layers it
   * does not name stay as they are. Serialized with the publisher's negotiations.
   */
  applyPublisherLayers(trackId, layers) {
    if (!Array.isArray(layers)) return;
    const entry = [...this.local.values()].find((e) => e.serverTrackId === trackId);
    const sender = entry?.transceiver?.sender;
    if (!sender) return;
    this.publisherQueue
      .run(async () => {
        const params = sender.getParameters();
        let changed = false;
        for (const { rid, active } of layers) {
          const encoding = params.encodings?.find((e) => e.rid === rid);
          if (encoding && encoding.active !== Boolean(active)) {
            encoding.active = Boolean(active);
            changed = true;
          }
        }
        if (changed) await sender.setParameters(params);
      })
      // A sender gone meanwhile (the call ended, the camera was unpublished): nothing to do.
      .catch(() => {});
  }

  isMuted(source) {
    return this.local.get(source)?.muted ?? true;
  }

  ensurePublisher() {
    if (this.publisher) return this.publisher;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
    this.publisher = pc;
    pc.addEventListener('icecandidate', (ev) => {
      if (ev.candidate) this.sendLocalCandidate('publisher', ev.candidate);
    });
    pc.addEventListener('connectionstatechange', () => {
      this.emit('media_state', { role: 'publisher', state: pc.connectionState });
    });
    this.watchConnection('publisher', pc);
    return pc;
  }

  /** Offers our current set of tracks on the publisher connection. Serialized. */
  negotiatePublisher() {
    return this.publisherQueue.run(async () => {
      if (this.state !== 'call') return;
      const live = [...this.local.entries()];
      if (live.length === 0 && !this.publisher) return;
      const pc = this.ensurePublisher();
      for (const [source, entry] of live) {
        if (!entry.transceiver) {
          // A shared screen is text and detail: when the uplink or the CPU falls short, the
          // browser's encoder keeps its resolution and lowers its frame rate (the gateway,
          // for its part, gives a screen share its rate before cameras: ARCHITECTURE).
          if (source === 'screen' && 'contentHint' in entry.track && !entry.track.contentHint) {
            entry.track.contentHint = 'detail';
          }
          entry.transceiver = pc.addTransceiver(entry.track, {
            direction: 'sendonly',
            streams: [this.localStream()],
            ...(source === 'camera' && this.simulcast ? { sendEncodings: CAMERA_SIMULCAST.map((e) => ({ ...e })) } : {}),
          });
          if (source === 'screen') {
            await keepResolution(entry.transceiver.sender);
            await temporalLayers(entry.transceiver.sender);
          }
        }
      }
      const answer = deferred();
      // Whoever rejects it (the end of the call, a media error, the timer), the rejection
      // is handled here or, when this job already gave up, by nobody: never a page error.
      answer.promise.catch(() => {});
      let timer = null;
      try {
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        // Torn down while the offer was being made: this connection is gone.
        if (this.publisher !== pc) return;
        const tracks = live
          .filter(([, e]) => e.transceiver.mid !== null)
          .map(([source, e]) => ({ mid: e.transceiver.mid, source, muted: e.muted }));
        this.pendingPublish = answer;
        timer = setTimeout(
          () => answer.reject(new GatehouseError('timeout', 'the server did not answer the publish offer')),
          NEGOTIATION_TIMEOUT_MS,
        );
        this.send({ type: 'publish_offer', sdp: pc.localDescription.sdp, tracks });
        this.flushLocalCandidates('publisher');
        const sdp = await answer.promise;
        if (this.publisher !== pc) return;
        await pc.setRemoteDescription({ type: 'answer', sdp });
        await this.flushRemoteCandidates('publisher');
        this.armConnectTimer('publisher', pc);
      } catch (e) {
        // The call ended (or the socket dropped) while this offer was on its way: the
        // connection is gone and the tracks are offered again on the next admission.
        // That is no failure for whoever asked to publish.
        if (this.publisher !== pc || e?.code === 'closed') return;
        if (pc.signalingState === 'have-local-offer') {
          await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
        }
        this.mediaError('publisher', e);
        throw e;
      } finally {
        clearTimeout(timer);
        if (this.pendingPublish === answer) this.pendingPublish = null;
      }
    });
  }

  /**
   * Emits `admitted` now, or, when a subscriber offer is on its way (others publish), once
   * it has been handed to the browser (ADMITTED_HOLD_MAX_MS at most). Not at all if the
   * call was left or the lobby re-entered meanwhile.
   */
  holdAdmitted(detail, offerComing) {
    this.releaseAdmitted();
    if (!offerComing) {
      this.emit('admitted', detail);
      return;
    }
    this.heldAdmitted = { detail, timer: setTimeout(() => this.releaseAdmitted(), ADMITTED_HOLD_MAX_MS) };
  }

  releaseAdmitted() {
    const held = this.heldAdmitted;
    if (!held) return;
    this.heldAdmitted = null;
    clearTimeout(held.timer);
    if (this.state === 'call') this.emit('admitted', held.detail);
  }

  /**
   * Offers our tracks on entering the call. With others' media to receive, the offer waits
   * for our first subscriber answer (PUBLISH_AFTER_SUBSCRIBE_MAX_MS at most): seeing the
   * others first is what joining feels like, and Chromium answers the server's offer
   * sooner when it is not starting encoders for our own offer at the same moment.
   */
  publishOnEntry(othersPublish) {
    const publish = () => {
      clearTimeout(this.publishTimer);
      this.publishTimer = null;
      this.afterFirstAnswer = null;
      this.negotiatePublisher().catch(() => {});
    };
    if (!othersPublish) {
      publish();
      return;
    }
    this.afterFirstAnswer = publish;
    this.publishTimer = setTimeout(publish, PUBLISH_AFTER_SUBSCRIBE_MAX_MS);
  }

  localStream() {
    if (!this.localMediaStream) this.localMediaStream = new MediaStream();
    return this.localMediaStream;
  }

  // ----------------------------------------------------------- remote media

  ensureSubscriber() {
    if (this.subscriber) return this.subscriber;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
    this.subscriber = pc;
    pc.addEventListener('icecandidate', (ev) => {
      if (ev.candidate) this.sendLocalCandidate('subscriber', ev.candidate);
    });
    pc.addEventListener('track', (ev) => this.onRemoteTrack(ev));
    pc.addEventListener('connectionstatechange', () => {
      this.emit('media_state', { role: 'subscriber', state: pc.connectionState });
    });
    this.watchConnection('subscriber', pc);
    return pc;
  }

  async answerSubscriber(sdp, restart = false) {
    if (this.state !== 'call') return;
    if (restart && this.subscriber) {
      // The server made a fresh subscriber connection: the old one goes, tracks are bound again.
      const old = this.subscriber;
      this.subscriber = null;
      old.close();
      this.candidates.subscriber = { outgoing: [], sent: false, incoming: [] };
      this.pendingRemote = [];
    }
    const pc = this.ensureSubscriber();
    const c = this.candidates.subscriber;
    c.sent = false;
    const applied = pc.setRemoteDescription({ type: 'offer', sdp });
    // The browser works on the offer while the page draws the call view.
    this.releaseAdmitted();
    await applied;
    await this.flushRemoteCandidates('subscriber');
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this.send({ type: 'subscribe_answer', sdp: pc.localDescription.sdp });
    this.flushLocalCandidates('subscriber');
    this.armConnectTimer('subscriber', pc);
    this.afterFirstAnswer?.();
  }

  onRemoteTrack(ev) {
    const track = ev.track;
    const participantId = ev.streams[0]?.id ?? null;
    const pending = { track, participantId };
    track.addEventListener('ended', () => {
      this.pendingRemote = this.pendingRemote.filter((p) => p !== pending);
    });
    if (!this.bindRemote(pending)) this.pendingRemote.push(pending);
  }

  /** Finds the TrackInfo a received track belongs to; binds and announces it. */
  bindRemote({ track, participantId }) {
    let info = this.tracks.get(track.id);
    if (!info && participantId) {
      // The msid track id did not match: fall back to the participant's unbound track of that kind.
      const unbound = [...this.tracks.values()].filter(
        (t) => t.participant_id === participantId && t.kind === track.kind && !this.remoteMedia.has(t.track_id),
      );
      info = unbound.find((t) => t.source === 'camera' || t.source === 'microphone') || unbound[0];
    }
    if (!info) return false;
    this.remoteMedia.set(info.track_id, track);
    const quality = this.qualities.get(info.track_id);
    if (quality && quality !== 'high') this.sendRaw({ type: 'set_subscription', track_id: info.track_id, quality });
    this.emit('remote_track', {
      trackId: info.track_id,
      participantId: info.participant_id,
      source: info.source,
      kind: info.kind,
      muted: info.muted,
      track,
    });
    return true;
  }

  onTrackPublished(info) {
    if (info.participant_id === this.you?.participant_id) {
      // One of ours: remember the server's id so mute_track can name it.
      const entry = this.local.get(info.source);
      if (entry && !entry.serverTrackId) {
        entry.serverTrackId = info.track_id;
        if (entry.muted !== info.muted) this.setMuted(info.source, entry.muted);
      }
      this.emit('local_track_published', { track: info });
      return;
    }
    this.tracks.set(info.track_id, info);
    this.emit('track_published', { track: info });
    for (const p of [...this.pendingRemote]) {
      if (this.bindRemote(p)) this.pendingRemote = this.pendingRemote.filter((q) => q !== p);
    }
  }

  dropRemoteTrack(trackId) {
    const info = this.tracks.get(trackId);
    this.tracks.delete(trackId);
    this.remoteMedia.delete(trackId);
    this.qualities.delete(trackId);
    this.videoLayers.delete(trackId);
    if (info) {
      this.emit('track_unpublished', {
        trackId,
        participantId: info.participant_id,
        source: info.source,
        kind: info.kind,
      });
    }
  }

  // ----------------------------------------------------------------- ICE

  sendLocalCandidate(target, candidate) {
    const c = this.candidates[target];
    const init = {
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid,
      sdpMLineIndex: candidate.sdpMLineIndex,
    };
    if (c.sent) this.sendRaw({ type: 'ice_candidate', target, candidate: init });
    else c.outgoing.push(init);
  }

  /** Candidates wait until our offer (publisher) or answer (subscriber) has gone out. */
  flushLocalCandidates(target) {
    const c = this.candidates[target];
    c.sent = true;
    for (const candidate of c.outgoing.splice(0)) this.sendRaw({ type: 'ice_candidate', target, candidate });
  }

  addRemoteCandidate(target, candidate) {
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    if (pc && pc.remoteDescription) {
      pc.addIceCandidate(candidate).catch((e) => this.mediaError(target, e));
    } else {
      this.candidates[target].incoming.push(candidate);
    }
  }

  async flushRemoteCandidates(target) {
    const pc = target === 'publisher' ? this.publisher : this.subscriber;
    for (const candidate of this.candidates[target].incoming.splice(0)) {
      await pc.addIceCandidate(candidate).catch((e) => this.mediaError(target, e));
    }
  }

  mediaError(role, e) {
    const detail = { role, code: e?.code || 'media_failed', message: e?.message || String(e) };
    this.mediaErrors = [...this.mediaErrors.slice(-9), detail];
    this.emit('media_error', detail);
  }

  resetMediaState() {
    this.candidates = {
      publisher: { outgoing: [], sent: false, incoming: [] },
      subscriber: { outgoing: [], sent: false, incoming: [] },
    };
    this.pendingRemote = [];
  }

  /** Closes both connections; local tracks are kept for the next admission. */
  teardownMedia() {
    clearTimeout(this.publishTimer);
    this.publishTimer = null;
    this.afterFirstAnswer = null;
    this.pendingPublish?.reject(new GatehouseError('closed', 'the call ended'));
    this.pendingPublish = null;
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = null;
    this.subscriber = null;
    this.publisherQueue = new SerialQueue();
    this.subscriberQueue = new SerialQueue();
    for (const entry of this.local.values()) {
      entry.transceiver = null;
      entry.serverTrackId = null;
    }
    for (const trackId of [...this.tracks.keys()]) this.dropRemoteTrack(trackId);
    this.participants.clear();
    this.lobbyEntries = [];
    this.resetMediaState();
    this.subscriberRestartPending = false;
    this.resetHealth();
  }

  // ---------------------------------------------------------- media health

  resetHealth() {
    for (const h of Object.values(this.health || {})) clearTimeout(h.timer);
    const fresh = () => ({
      exists: false,
      state: 'new',
      iceState: 'new',
      path: null,
      pair: null,
      attempts: 0,
      restarts: 0,
      stalled: false,
      gaveUp: false,
      everConnected: false,
      timer: null,
    });
    this.health = { publisher: fresh(), subscriber: fresh() };
    clearTimeout(this.mediaReportTimer);
    this.mediaReportTimer = null;
    this.lastPhase = null;
    this.emitMediaHealth();
  }

  /** Follows one connection's states; a new connection of the role replaces the old one's health. */
  watchConnection(role, pc) {
    const h = this.health[role];
    clearTimeout(h.timer);
    h.timer = null;
    Object.assign(h, { exists: true, state: pc.connectionState, iceState: pc.iceConnectionState, path: null, pair: null, stalled: false });
    const changed = () => this.onConnectionState(role, pc);
    pc.addEventListener('connectionstatechange', changed);
    pc.addEventListener('iceconnectionstatechange', changed);
    this.emitMediaHealth();
  }

  onConnectionState(role, pc) {
    if (this[role] !== pc) return;
    const h = this.health[role];
    h.state = pc.connectionState;
    h.iceState = pc.iceConnectionState;
    if (h.state === 'connected') {
      clearTimeout(h.timer);
      h.timer = null;
      Object.assign(h, { attempts: 0, stalled: false, gaveUp: false, everConnected: true });
      this.readPath(role, pc);
    } else {
      h.path = null;
      if (h.state === 'disconnected' || h.state === 'failed') this.recoverMedia(role);
    }
    this.emitMediaHealth();
  }

  /** Reads the selected candidate pair, so the path ('udp' | 'tcp' | 'relay') can be shown and reported. */
  async readPath(role, pc) {
    let pair = null;
    try {
      pair = selectedPair(await pc.getStats());
    } catch {
      return;
    }
    if (this[role] !== pc) return;
    const h = this.health[role];
    h.pair = pair;
    h.path = h.state === 'connected' ? pair?.path ?? null : null;
    this.emitMediaHealth();
  }

  /** After a negotiation: a connection that does not come up in time is treated as blocked. */
  armConnectTimer(role, pc) {
    const h = this.health[role];
    if (this[role] !== pc || h.state === 'connected' || h.timer) return;
    h.timer = setTimeout(() => {
      h.timer = null;
      if (this[role] !== pc || h.state === 'connected') return;
      h.stalled = true;
      this.recoverMedia(role);
      this.emitMediaHealth();
    }, MEDIA_CONNECT_TIMEOUT_MS);
  }

  /**
   * Restarts ICE on a connection that is down, stalled or asked for (the
   * debug hook `restartIce()` comes here too): the publisher re-offers with new
   * credentials; the subscriber asks the server for a fresh connection
   * (`restart_ice`). One restart at a time per connection; after
   * MEDIA_MAX_RESTARTS the client gives up and says what to try.
   *
   * A restart needs signaling, so unless asked for it waits until the socket has
   * answered a probe (`probeSignaling`). During an outage the probe fails and nothing
   * restarts: the old path, if it comes back, carries media again at once (a restart
   * begun meanwhile would wait for signaling to recover). A socket that stays dead is
   * replaced (`trySpareSocket`), and reconnecting renegotiates everything.
   */
  recoverMedia(role, { requested = false, proven = false } = {}) {
    const h = this.health[role];
    const pc = this[role];
    if (!requested && !proven) {
      this.probeSignaling(role);
      return false;
    }
    if (!pc || this.state !== 'call' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (h.timer && !requested) return false;
    if (h.attempts >= MEDIA_MAX_RESTARTS && !requested) {
      h.gaveUp = true;
      this.emitMediaHealth();
      return false;
    }
    clearTimeout(h.timer);
    h.attempts += 1;
    h.restarts += 1;
    h.timer = setTimeout(() => {
      h.timer = null;
      if (this[role] === pc || role === 'subscriber') {
        if (this.health[role].state !== 'connected') this.recoverMedia(role);
      }
    }, MEDIA_RESTART_TIMEOUT_MS);
    this.emit('media_restart', { role, attempt: h.attempts });
    if (role === 'publisher') {
      // Fresh ICE servers first: the TURN credentials of `admitted` may have expired.
      this.freshIceServers().then(() => {
        if (this.publisher !== pc || this.state !== 'call') return;
        pc.restartIce();
        this.negotiatePublisher().catch(() => {});
      });
    } else {
      this.subscriberQueue.run(() => {
        this.subscriberRestartPending = true;
        this.send({ type: 'restart_ice' });
      }).catch((e) => this.mediaError('subscriber', e));
    }
    this.emitMediaHealth();
    return true;
  }

  /**
   * Asks the server for fresh ICE servers (`refresh_ice_servers`); resolves when its
   * `ice_servers` answer has been applied, or after ICE_SERVERS_WAIT_MS (an old server,
   * a lost frame: the restart goes ahead with what it has). Never rejects.
   */
  freshIceServers() {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.iceServersWaiters = (this.iceServersWaiters || []).filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, ICE_SERVERS_WAIT_MS);
      this.iceServersWaiters = [...(this.iceServersWaiters || []), done];
      this.send({ type: 'refresh_ice_servers' });
    });
  }

  /** Takes a new ICE server list: both connections get it, later ones are built with it. */
  applyIceServers(iceServers) {
    this.iceServers = iceServers;
    this.iceServersReceived = (this.iceServersReceived || 0) + 1;
    for (const pc of [this.publisher, this.subscriber]) {
      if (!pc || pc.connectionState === 'closed') continue;
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers });
      } catch (e) {
        this.mediaError(pc === this.publisher ? 'publisher' : 'subscriber', e);
      }
    }
    for (const waiter of this.iceServersWaiters || []) waiter();
  }

  /** Debug and test hook: an ICE restart now, on one connection or both, by the same path a failure takes. */
  restartIce(role = null) {
    const roles = role ? [role] : ['publisher', 'subscriber'];
    return roles.map((r) => this.recoverMedia(r, { requested: true }));
  }

  /** The user's media in one word (see media-status.js `mediaPhase`). */
  mediaPhase() {
    return mediaPhase(this.health);
  }

  emitMediaHealth() {
    if (!this.health) return;
    const phase = mediaPhase(this.health);
    this.emit('media_health', { phase, health: this.health });
    this.lastPhase = phase;
    this.scheduleMediaReport();
  }

  /** Tells the server (and so the others) about a change, coalesced; never the same report twice. */
  scheduleMediaReport() {
    if (this.mediaReportTimer || this.state !== 'call') return;
    this.mediaReportTimer = setTimeout(() => {
      this.mediaReportTimer = null;
      if (this.state !== 'call') return;
      const report = reportOf(this.health);
      const text = JSON.stringify(report);
      if (text === this.lastMediaReport) return;
      if (this.sendRaw({ type: 'media_status', ...report })) this.lastMediaReport = text;
    }, MEDIA_REPORT_DELAY_MS);
  }

  // ----------------------------------------------------------------- stats

  /**
   * A summary of getStats() on both connections:
   * { state, publisher, subscriber, inbound: [...], outbound: [...] } where each
   * inbound entry names its participant and source, and carries packetsReceived,
   * bytesReceived, framesDecoded (video), packetsLost; each outbound entry its
   * source, packetsSent, bytesSent, framesEncoded (video).
   */
  async stats() {
    const summary = {
      state: this.state,
      publisher: this.publisher?.connectionState ?? null,
      subscriber: this.subscriber?.connectionState ?? null,
      phase: mediaPhase(this.health),
      media: {},
      inbound: [],
      outbound: [],
      mediaErrors: this.mediaErrors,
    };
    for (const role of ['publisher', 'subscriber']) {
      const h = this.health[role];
      const pc = this[role];
      if (pc && pc.connectionState === 'connected') await this.readPath(role, pc);
      summary.media[role] = {
        state: h.exists ? h.state : null,
        iceState: h.exists ? h.iceState : null,
        path: h.path,
        pair: h.pair,
        restarts: h.restarts,
        attempts: h.attempts,
        gaveUp: h.gaveUp,
      };
    }
    if (this.subscriber) {
      const byMedia = new Map([...this.remoteMedia].map(([id, t]) => [t, id]));
      for (const receiver of this.subscriber.getReceivers()) {
        const trackId = byMedia.get(receiver.track);
        const info = trackId ? this.tracks.get(trackId) : null;
        const report = await receiver.getStats();
        report.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          summary.inbound.push({
            kind: s.kind,
            trackId: trackId ?? null,
            participantId: info?.participant_id ?? null,
            source: info?.source ?? null,
            packetsReceived: s.packetsReceived ?? 0,
            bytesReceived: s.bytesReceived ?? 0,
            packetsLost: s.packetsLost ?? 0,
            framesDecoded: s.framesDecoded ?? null,
            frameWidth: s.frameWidth ?? null,
            frameHeight: s.frameHeight ?? null,
          });
        });
      }
    }
    if (this.publisher) {
      for (const [source, entry] of this.local) {
        if (!entry.transceiver) continue;
        const report = await entry.transceiver.sender.getStats();
        report.forEach((s) => {
          if (s.type !== 'outbound-rtp') return;
          summary.outbound.push({
            kind: s.kind,
            source,
            trackId: entry.serverTrackId,
            packetsSent: s.packetsSent ?? 0,
            bytesSent: s.bytesSent ?? 0,
            framesEncoded: s.framesEncoded ?? null,
          });
        });
      }
    }
    return summary;
  }
}

/** A `left` reason for a join the server refused on reconnect. */
function refusalReason(code) {
  switch (code) {
    case 'meeting_ended':
      return 'meeting_ended';
    default:
      return 'disconnected';
  }
}
