/**
 * analytics-chart.js: the geometry of the console's appointments chart, pure (no DOM),
 * so it is tested in Node (tests/browser/analytics-chart.test.mjs).
 *
 * One stacked bar per period of `GET /api/v1/analytics/appointments` (docs/PROTOCOL.md
 * §15.6): completed, no-shows, cancelled and the rest (still open: scheduled, waiting, in
 * progress) from the bottom up, on a y axis from 0 to a round maximum with its ticks.
 * The chart is drawn by our own SVG code rather than a charting library: one chart kind,
 * ~100 lines, nothing to vendor or keep up to date (docs/WEB-CLIENT.md, "Analytics").
 */

/** The stack, bottom first: key, label, CSS class. */
export const SEGMENTS = [
  { key: 'completed', label: 'Completed', cls: 'completed' },
  { key: 'no_shows', label: 'No-shows', cls: 'no-show' },
  { key: 'cancelled', label: 'Cancelled', cls: 'cancelled' },
  { key: 'open', label: 'Open', cls: 'open' },
];

/** A round axis maximum at or above `max` (1, 2, 5 × 10^n), and its ticks. */
export function axis(max) {
  if (!(max > 0)) return { top: 1, ticks: [0, 1] };
  // At most five steps of 1, 2 or 5 × 10^n; whole appointments, so never under 1.
  const raw = max / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
  const unit = Math.max(1, Math.round(step));
  const top = Math.ceil(max / unit) * unit;
  const ticks = [];
  for (let v = 0; v <= top; v += unit) ticks.push(v);
  return { top, ticks };
}

/** What is still open in a period: appointments not completed, no-show or cancelled. */
export function openCount(p) {
  return Math.max(0, (p.appointments || 0) - (p.completed || 0) - (p.no_shows || 0) - (p.cancelled || 0));
}

/**
 * The bars for `periods` in a `width` × `height` plot area (the caller leaves room for
 * the axis labels around it). Each bar: `{period, x, width, total, segments: [{key, label,
 * cls, value, y, height}]}` with y from the top of the plot, segments of value 0 left out.
 */
export function barChart(periods, { width, height }) {
  const totals = periods.map((p) => p.appointments || 0);
  const { top, ticks } = axis(Math.max(0, ...totals));
  const slot = periods.length ? width / periods.length : width;
  const barWidth = Math.max(1, Math.min(48, slot * 0.7));
  const scale = (v) => (v / top) * height;
  const bars = periods.map((p, i) => {
    let base = height;
    const segments = [];
    for (const s of SEGMENTS) {
      const value = s.key === 'open' ? openCount(p) : p[s.key] || 0;
      if (value <= 0) continue;
      const h = scale(value);
      base -= h;
      segments.push({ ...s, value, y: base, height: h });
    }
    return { period: p.period, x: i * slot + (slot - barWidth) / 2, width: barWidth, total: p.appointments || 0, segments };
  });
  return { bars, ticks: ticks.map((v) => ({ value: v, y: height - scale(v) })), top };
}

/** ISO 8601 week of a civil date given as UTC midnight ms: `2026-W50`. */
export function isoWeek(ms) {
  const d = new Date(ms);
  const weekday = (d.getUTCDay() + 6) % 7; // Monday 0
  // The week's Thursday decides its year.
  const thursday = new Date(ms + (3 - weekday) * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * DAY_MS));
  return `${year}-W${String(week).padStart(2, '0')}`;
}

const DAY_MS = 24 * 3600 * 1000;

/**
 * Every period of a report from `from` to `to` (`YYYY-MM-DD`, both included): each day, or
 * each ISO week touching them, in order; a period the report left out (no appointments:
 * docs/PROTOCOL.md §15.6) is there with zeros, so the chart shows it as an empty bar.
 */
export function allPeriods({ from, to, group, periods }) {
  const given = new Map(periods.map((p) => [p.period, p]));
  const start = Date.parse(`${from}T00:00:00Z`);
  const end = Date.parse(`${to}T00:00:00Z`);
  if (!(start <= end)) return periods;
  const names = [];
  for (let ms = start; ms <= end && names.length <= 400; ms += DAY_MS) {
    const name = group === 'week' ? isoWeek(ms) : new Date(ms).toISOString().slice(0, 10);
    if (names[names.length - 1] !== name) names.push(name);
  }
  return names.map((name) => given.get(name) || { period: name, appointments: 0, completed: 0, no_shows: 0, cancelled: 0 });
}

/** "2 h 05 min", "14 min", "45 s"; "—" for null. */
export function formatMinutes(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** "5.7 %"; "—" for null. */
export function formatRate(rate) {
  return rate === null || rate === undefined ? '—' : `${(rate * 100).toFixed(1)} %`;
}

/** `YYYY-MM-DD` of `date` in the browser's own time zone. */
export function localDate(date) {
  const y = date.getFullYear();
  const m = String(date.getMonth() + 1).padStart(2, '0');
  const d = String(date.getDate()).padStart(2, '0');
  return `${y}-${m}-${d}`;
}
