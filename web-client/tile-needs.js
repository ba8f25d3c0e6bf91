/**
 * What each remote camera tile needs of its video, said to the gateway as a simulcast
 * quality (`set_subscription.quality`, docs/PROTOCOL.md §11.3): a hidden tile (no size, or
 * scrolled out of view) asks for nothing, a small one for the low layer, a large one for
 * the full picture. `qualityFor` is the rule, pure; `TileNeeds` watches the tiles' video
 * elements (ResizeObserver, IntersectionObserver) and tells the client when a need changes.
 */

/** Widths in device pixels up to which the low and the medium layer are enough (the web
 * client sends 320, 640 and 1280 wide from a 720p camera: a layer a little smaller than
 * its tile still looks sharp, one twice as large is wasted). */
export const LOW_MAX_PX = 400;
export const MEDIUM_MAX_PX = 800;

/**
 * The quality a tile of `width` x `height` CSS pixels needs on a screen of `pixelRatio`,
 * judged by the width a 16:9 picture filling it would have; 'off' when it is not visible.
 */
export function qualityFor({ visible, width, height, pixelRatio = 1 }) {
  if (!visible || !(width > 0) || !(height > 0)) return 'off';
  const px = Math.max(width, (height * 16) / 9) * (pixelRatio > 0 ? pixelRatio : 1);
  if (px <= LOW_MAX_PX) return 'low';
  if (px <= MEDIUM_MAX_PX) return 'medium';
  return 'high';
}

export class TileNeeds {
  /** @param {(trackId: string, quality: string) => void} tell where changed needs go */
  constructor(tell) {
    this.tell = tell;
    /** video element -> { trackId, width, height, intersecting } */
    this.watched = new Map();
    this.resize = typeof ResizeObserver === 'function'
      ? new ResizeObserver((entries) => {
        for (const e of entries) this.update(e.target, { width: e.contentRect.width, height: e.contentRect.height });
      })
      : null;
    this.intersect = typeof IntersectionObserver === 'function'
      ? new IntersectionObserver((entries) => {
        for (const e of entries) this.update(e.target, { intersecting: e.isIntersecting });
      })
      : null;
  }

  /** Watches `video`, which shows the remote track `trackId` (null: none any more). */
  watch(video, trackId) {
    const had = this.watched.get(video);
    if (!trackId) {
      if (had) this.unwatch(video);
      return;
    }
    if (had?.trackId === trackId) return;
    const rect = video.getBoundingClientRect();
    this.watched.set(video, { trackId, width: rect.width, height: rect.height, intersecting: true });
    this.resize?.observe(video);
    this.intersect?.observe(video);
    this.update(video, {});
  }

  unwatch(video) {
    this.watched.delete(video);
    this.resize?.unobserve(video);
    this.intersect?.unobserve(video);
  }

  update(video, change) {
    const w = this.watched.get(video);
    if (!w) return;
    Object.assign(w, change);
    const quality = qualityFor({
      visible: w.intersecting,
      width: w.width,
      height: w.height,
      pixelRatio: globalThis.devicePixelRatio || 1,
    });
    video.dataset.quality = quality;
    this.tell(w.trackId, quality);
  }

  disconnect() {
    this.resize?.disconnect();
    this.intersect?.disconnect();
    this.watched.clear();
  }
}
