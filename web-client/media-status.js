/**
 * media-status.js: what a participant's media is doing, in words. Pure
 * functions (no DOM, no RTCPeerConnection), shared by the client module, the
 * call view and the console; docs/PROTOCOL.md §11.6 says what is reported.
 *
 * A connection's health is { state, path, attempts, stalled, gaveUp, everConnected }:
 * `state` is RTCPeerConnection.connectionState ('new' when not made), `path`
 * 'udp' | 'tcp' | 'relay' | null while connected, `attempts` the ICE restarts
 * since it last connected, `gaveUp` once every attempt failed.
 */

/** The path of a selected pair's local candidate (a getStats `local-candidate`). */
export function pathOf(localCandidate) {
  if (!localCandidate) return null;
  if (localCandidate.candidateType === 'relay') return 'relay';
  return String(localCandidate.protocol).toLowerCase() === 'tcp' ? 'tcp' : 'udp';
}

/**
 * The selected candidate pair of a getStats() report, with its two candidates:
 * the `transport` stat's `selectedCandidatePairId`, else a nominated and
 * succeeded `candidate-pair`. `null` when nothing is selected.
 */
export function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (!pair && s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || null;
  });
  if (!pair) {
    report.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  if (!pair) return null;
  const local = report.get(pair.localCandidateId) || null;
  const remote = report.get(pair.remoteCandidateId) || null;
  const brief = (c) =>
    c ? { type: c.candidateType, protocol: c.protocol, address: c.address ?? c.ip ?? null, port: c.port ?? null } : null;
  return { path: pathOf(local), local: brief(local), remote: brief(remote), rttMs: pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null };
}

const BAD = new Set(['disconnected', 'failed', 'closed']);

/**
 * One word for the user's own media, from the health of the connections that
 * exist (a missing one does not count):
 * 'idle' (no connection yet), 'connecting', 'connected', 'blocked' (never
 * connected, trying another way), 'reconnecting' (was connected, lost, trying
 * again), 'failed' (every attempt failed).
 */
export function mediaPhase(health) {
  const live = Object.values(health).filter((h) => h && h.exists);
  if (live.length === 0) return 'idle';
  if (live.some((h) => h.gaveUp)) return 'failed';
  if (live.every((h) => h.state === 'connected')) return 'connected';
  const troubled = live.filter((h) => BAD.has(h.state) || h.stalled || h.attempts > 0);
  if (troubled.length === 0) return 'connecting';
  return troubled.some((h) => h.everConnected) ? 'reconnecting' : 'blocked';
}

const PATH_WORDS = { udp: 'UDP', tcp: 'TCP', relay: 'a relay (TURN)' };

/** "Connected over UDP" (or both paths when the two connections differ). */
export function connectedText(health) {
  const paths = [...new Set(Object.values(health).filter((h) => h && h.exists && h.path).map((h) => h.path))];
  if (paths.length === 0) return 'Connected';
  return `Connected over ${paths.map((p) => PATH_WORDS[p] || p).join(' and ')}`;
}

/** The status line for each phase, and for trouble what to try. */
export function phaseMessage(phase, health) {
  switch (phase) {
    case 'idle':
      return { status: '', problem: null };
    case 'connecting':
      return { status: 'Connecting audio and video…', problem: null };
    case 'connected':
      return { status: connectedText(health), problem: null };
    case 'blocked':
      return {
        status: 'Trying another way to connect…',
        problem: "Your network is blocking the call's media; trying another way…",
      };
    case 'reconnecting':
      return { status: 'Reconnecting media…', problem: 'Reconnecting media… Your connection was interrupted.' };
    case 'failed':
    default:
      return {
        status: 'No audio or video',
        problem:
          'Audio and video could not connect on any path. Try another network (for example mobile data instead of this Wi-Fi), turn off a VPN if you use one, or contact the host. Chat still works.',
      };
  }
}

/**
 * How someone else's media looks from their `participant_media`:
 * { ok, state, text } where `ok` says whether they send media, `state` is a
 * stable word for tests and styles ('media', 'connecting', 'no-media') and
 * `text` is what staff read ("UDP", "no media (failed)", ...). `null` when
 * they have not reported.
 */
export function describePeerMedia(report) {
  if (!report) return null;
  const pub = report.publisher || { state: 'new' };
  const sub = report.subscriber || { state: 'new' };
  if (pub.state === 'connected') {
    // The path comes with a later report once getStats has named the selected pair.
    const via = pub.path ? ` over ${PATH_WORDS[pub.path] || pub.path}` : '';
    const receiving = BAD.has(sub.state) ? `, not receiving (${sub.state})` : '';
    return { ok: true, state: 'media', text: `media${via}${receiving}` };
  }
  if (pub.state === 'connecting') return { ok: false, state: 'connecting', text: 'connecting media…' };
  const why = { new: 'not sending', disconnected: 'reconnecting', failed: 'failed', closed: 'closed' }[pub.state] || pub.state;
  return { ok: false, state: 'no-media', text: `no media (${why})` };
}

/** The frame body a client reports: `new` for a connection not made, a path only while connected. */
export function reportOf(health) {
  const one = (h) => {
    if (!h || !h.exists) return { state: 'new' };
    // Once every restart failed the client has given up on this connection, whatever
    // the browser still calls it (a restarted connection sits in "connecting"). So has a
    // connection that never connected and missed its connect timer (or was restarted):
    // it is trying another way, but meanwhile there is no media and others must see that
    // ("no media (failed)"), not "connecting".
    const blocked = !h.everConnected && h.state !== 'connected' && (h.stalled || h.attempts > 0);
    const out = { state: h.gaveUp || blocked ? 'failed' : h.state };
    if (h.state === 'connected' && h.path) out.path = h.path;
    return out;
  };
  return { publisher: one(health.publisher), subscriber: one(health.subscriber) };
}

const QUALITY_WORDS = { excellent: 'excellent', good: 'good', poor: 'weak', lost: 'lost' };

/**
 * A participant's connection quality (`connection_quality`: `{quality, videoReduced}`) in
 * words: `name`, the badge's accessible name ("Connection weak, receiving reduced video":
 * `video_reduced` is about the video the participant receives), and `word`, what the badge
 * shows beside its bars: only when weak or lost, so a healthy call is not cluttered.
 */
export function describeQuality({ quality, videoReduced }) {
  const w = QUALITY_WORDS[quality] ?? 'unknown';
  return {
    name: `Connection ${w}${videoReduced ? ', receiving reduced video' : ''}`,
    word: quality === 'poor' || quality === 'lost' ? `connection ${w}` : '',
  };
}

/**
 * What the notice above the grid says about our own connection: '' while it is fine (or
 * `good`: one layer down is no news), and '' while `mediaPhase` is in trouble, since the
 * media alert already says so (`phaseMessage(...).problem`) and one message is enough.
 */
export function qualityNoticeText({ quality, videoReduced }, mediaPhase = 'connected') {
  if (phaseMessage(mediaPhase, {}).problem) return '';
  if (quality === 'lost') return 'Your connection is interrupted: your audio and video are not getting through.';
  if (quality !== 'poor') return '';
  return videoReduced
    ? 'Your connection is weak: video was reduced to keep audio clear.'
    : 'Your connection is weak: sound and picture may break up.';
}

/** What a tile's low-quality label says: our downlink holds the tile's video below its ask. */
export const LOW_QUALITY_TEXT = 'Low quality: your connection';

/** How long a tile's low-quality label stays once its video is no longer reduced. */
export const LOW_QUALITY_HOLD_MS = 3000;

/**
 * Whether a remote video's tile shows its low-quality label, from the `reduced` flag of
 * `video_layer` as it comes (pure; the caller gives the time in ms). The label shows as soon
 * as the video is reduced and goes only once it has not been reduced for `holdMs`, so a
 * video that comes back and drops again within that time neither blinks nor is announced
 * again (the label is a polite live region).
 */
export class LowQualityLabel {
  constructor(holdMs = LOW_QUALITY_HOLD_MS) {
    this.holdMs = holdMs;
    this.reduced = false;
    /** Since when (ms) the video is no longer reduced, while the label still shows. */
    this.clearSince = null;
  }

  /** The video's `reduced` flag as told at `now`. */
  set(reduced, now) {
    if (reduced) {
      this.reduced = true;
      this.clearSince = null;
    } else if (this.reduced) {
      this.reduced = false;
      this.clearSince = now;
    }
  }

  /**
   * At `now`: `shown`, whether the label shows, and `recheckAt`, when (ms) it may go without
   * further news (null when nothing is pending).
   */
  state(now) {
    if (this.reduced) return { shown: true, recheckAt: null };
    if (this.clearSince !== null && now - this.clearSince < this.holdMs) {
      return { shown: true, recheckAt: this.clearSince + this.holdMs };
    }
    this.clearSince = null;
    return { shown: false, recheckAt: null };
  }
}
