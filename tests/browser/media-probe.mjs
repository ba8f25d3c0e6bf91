// Media measurement shared by scenarios.mjs (Chromium, playwright-core) and
// firefox.mjs (Firefox, puppeteer-core). Driver-neutral: the predicate runs in
// the page (serialised by the driver), the summary runs in Node.

/**
 * Page-side predicate for waitForFunction: true once inbound media rose past `first`.
 * Synchronous, as both drivers need: it starts one window.gatehouse.stats() call at a
 * time and judges the last one that finished. Self-contained (it is serialised).
 */
export function mediaRisingPredicate({ first, wantVideo, wantAudio, source, videoKey }) {
  const probe = (window.__gatehouseProbe ||= { busy: false, last: null });
  if (!probe.busy) {
    probe.busy = true;
    window.gatehouse.stats().then(
      (s) => Object.assign(probe, { busy: false, last: s }),
      () => (probe.busy = false),
    );
  }
  const now = probe.last;
  if (!now) return false;
  const sum = (s, pred, key) => s.inbound.filter(pred).reduce((a, x) => a + (x[key] || 0), 0);
  const video = (x) => x.kind === 'video' && (x.source === source || x.source === null);
  const audio = (x) => x.kind === 'audio';
  const videoOk = !wantVideo || sum(now, video, videoKey) > sum(first, video, videoKey);
  const audioOk = !wantAudio || sum(now, audio, 'packetsReceived') > sum(first, audio, 'packetsReceived');
  return videoOk && audioOk;
}

/** The part of a stats() sample a scenario reports. */
export function briefStats(s) {
  return {
    publisher: s?.publisher ?? null,
    subscriber: s?.subscriber ?? null,
    // Per connection: state, selected path ('udp' | 'tcp' | 'relay'), restarts.
    media: s?.media ?? null,
    inbound: (s?.inbound || []).map((x) => ({
      kind: x.kind,
      source: x.source,
      participantId: x.participantId,
      framesDecoded: x.framesDecoded,
      packetsReceived: x.packetsReceived,
    })),
    outbound: (s?.outbound || []).map((x) => ({ kind: x.kind, source: x.source, packetsSent: x.packetsSent })),
    mediaErrors: s?.mediaErrors || [],
  };
}

/** `{flowing, before, after}`, the shape every scenario reports media in. */
export function mediaReport(flowing, first, second) {
  return { flowing, before: { ...briefStats(first), mediaErrors: undefined }, after: briefStats(second) };
}

/**
 * Page-side predicate for waitForFunction: true once every `kinds` ('audio', 'video')
 * has an outbound stream whose bytesSent rose past `first` (what this page sends).
 * Synchronous and self-contained like `mediaRisingPredicate`.
 */
export function outboundRisingPredicate({ first, kinds }) {
  const probe = (window.__gatehouseOutProbe ||= { busy: false, last: null });
  if (!probe.busy) {
    probe.busy = true;
    window.gatehouse.stats().then(
      (s) => Object.assign(probe, { busy: false, last: s }),
      () => (probe.busy = false),
    );
  }
  const now = probe.last;
  if (!now) return false;
  const sent = (s, kind) => (s?.outbound || []).filter((x) => x.kind === kind).reduce((a, x) => a + (x.bytesSent || 0), 0);
  return kinds.every((k) => sent(now, k) > sent(first, k));
}
