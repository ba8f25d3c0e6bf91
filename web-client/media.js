/**
 * media.js: the local camera and microphone before and during a call.
 *
 * `LocalMedia` asks for both devices at once and, when that fails, for each
 * alone, so a person without a camera (or who refused it) can still be heard.
 * What failed is kept in `problem` for the page to explain.
 */

export class LocalMedia {
  constructor() {
    this.audioTrack = null;
    this.videoTrack = null;
    /** Why a device is missing, in words, or null. */
    this.problem = null;
    /** What failed, for the page and its tests: `[{device, reason: denied|absent|busy|failed}]`. */
    this.failures = [];
  }

  /** Opens the devices (or the chosen ones); replaces tracks opened before. */
  async start({ audioDeviceId = null, videoDeviceId = null } = {}) {
    const audio = audioDeviceId ? { deviceId: { exact: audioDeviceId } } : true;
    const video = {
      width: { ideal: 1280 },
      height: { ideal: 720 },
      ...(videoDeviceId ? { deviceId: { exact: videoDeviceId } } : {}),
    };
    if (!navigator.mediaDevices?.getUserMedia) {
      this.failures = [{ device: 'camera and microphone', reason: 'unsupported' }];
      this.problem = 'This browser cannot use a camera or microphone here (a secure https:// page is needed).';
      return;
    }
    this.problem = null;
    this.failures = [];
    let stream = await attempt({ audio, video });
    let missing = [];
    if (!stream.ok) {
      const a = await attempt({ audio });
      const v = await attempt({ video });
      stream = { tracks: [...(a.ok ? a.tracks : []), ...(v.ok ? v.tracks : [])] };
      if (!a.ok) missing.push(['microphone', a.error]);
      if (!v.ok) missing.push(['camera', v.error]);
    }
    this.replace(stream.tracks || []);
    this.failures = missing.map(([device, error]) => ({ device, reason: deviceFailure(error) }));
    if (missing.length) this.problem = explainDevices(this.failures);
  }

  replace(tracks) {
    const audio = tracks.find((t) => t.kind === 'audio') || null;
    const video = tracks.find((t) => t.kind === 'video') || null;
    if (this.audioTrack && this.audioTrack !== audio) this.audioTrack.stop();
    if (this.videoTrack && this.videoTrack !== video) this.videoTrack.stop();
    this.audioTrack = audio;
    this.videoTrack = video;
  }

  /** Cameras and microphones, once permission has been given (labels are empty before). */
  async devices() {
    if (!navigator.mediaDevices?.enumerateDevices) return { cameras: [], microphones: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      cameras: all.filter((d) => d.kind === 'videoinput' && d.deviceId),
      microphones: all.filter((d) => d.kind === 'audioinput' && d.deviceId),
    };
  }

  /** Stops both devices (the camera light goes off). */
  stop() {
    this.audioTrack?.stop();
    this.videoTrack?.stop();
    this.audioTrack = null;
    this.videoTrack = null;
  }
}

async function attempt(constraints) {
  try {
    const s = await navigator.mediaDevices.getUserMedia(constraints);
    return { ok: true, tracks: s.getTracks() };
  } catch (error) {
    return { ok: false, error };
  }
}

/** What went wrong with a device, from the DOMException getUserMedia rejected with. */
export function deviceFailure(error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
    case 'DevicesNotFoundError':
      return 'absent';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'busy';
    default:
      return 'failed';
  }
}

/**
 * Why devices are missing and what to do, in words: one sentence per kind of failure
 * (`failures` is `[{device: 'camera' | 'microphone', reason}]`, reasons from
 * `deviceFailure`). Before joining every sentence ends with the preview's Try again and
 * a last one says joining without them works; in the call (`inCall`) the way back is to
 * leave and join again.
 */
export function explainDevices(failures, { inCall = false } = {}) {
  const byReason = new Map();
  for (const { device, reason } of failures) byReason.set(reason, [...(byReason.get(reason) || []), device]);
  const names = (list) => list.join(' and ');
  const it = (list) => (list.length > 1 ? 'them' : 'it');
  const then = inCall ? 'then leave and join again' : 'then press Try again';
  const parts = [];
  const denied = byReason.get('denied');
  if (denied) {
    parts.push(
      `Your browser is blocking the ${names(denied)} for this page. To be seen and heard, allow ${it(denied)}: ` +
        `click the camera icon or the lock in the address bar, choose Allow, ${then}.`,
    );
  }
  const absent = byReason.get('absent');
  if (absent) parts.push(`No ${names(absent)} was found. Connect one (or switch it on), ${then}.`);
  const busy = byReason.get('busy');
  if (busy) {
    parts.push(
      `Your ${names(busy)} is in use by another program or could not be started. ` +
        `Close other apps that may use ${it(busy)} (another video call, for example), ${then}.`,
    );
  }
  const failed = [...(byReason.get('failed') || []), ...(byReason.get('unsupported') || [])];
  if (failed.length) parts.push(`Your ${names(failed)} could not be started in this browser. Try another browser, or reload the page.`);
  if (!failures.length) return '';
  parts.push(
    inCall
      ? 'The others cannot see or hear what is missing; you can still see and hear them, and chat.'
      : `Or join without ${it(failures)}: you can still see and hear the others, and chat.`,
  );
  return parts.join(' ');
}

/** Fills a <select> with devices, keeping the chosen one. */
export function fillDeviceSelect(select, devices, currentId, noun) {
  const options = devices.map((d, i) => {
    const o = document.createElement('option');
    o.value = d.deviceId;
    o.textContent = d.label || `${noun} ${i + 1}`;
    o.selected = d.deviceId === currentId;
    return o;
  });
  select.replaceChildren(...options);
  select.disabled = devices.length === 0;
}
