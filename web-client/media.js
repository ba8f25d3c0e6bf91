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
      this.problem = 'This browser cannot use a camera or microphone here (a secure https:// page is needed).';
      return;
    }
    this.problem = null;
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
    if (missing.length) this.problem = explain(missing);
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

function explain(missing) {
  const names = missing.map(([what]) => what).join(' and ');
  const denied = missing.some(([, e]) => e?.name === 'NotAllowedError');
  const absent = missing.some(([, e]) => e?.name === 'NotFoundError' || e?.name === 'OverconstrainedError');
  if (denied) {
    return `You did not allow the ${names}. You can still join, and allow it later in your browser's site settings.`;
  }
  if (absent) return `No ${names} was found. You can still join and use chat.`;
  return `Your ${names} could not be started (it may be in use by another program). You can still join.`;
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
