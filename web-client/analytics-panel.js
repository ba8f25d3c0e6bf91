/**
 * analytics-panel.js: the appointments report on the console's dashboard, live from
 * `GET /api/v1/analytics/appointments` (docs/PROTOCOL.md §15.6): a range of local dates
 * (the last 30 days by default, in the browser's time zone), by day or week, for what the
 * staff member may see or one department; the totals, a stacked bar chart per period
 * (analytics-chart.js) with the same figures as a table beside it for screen readers and
 * for reading exact numbers, and the report as CSV.
 */

import { api, describeError } from './api.js';
import { SEGMENTS, allPeriods, barChart, formatMinutes, formatRate, localDate, openCount } from './analytics-chart.js';
import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const PLOT = { width: 520, height: 160, left: 36, bottom: 28, top: 8, right: 8 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** The totals shown, in order: test id, label, how to read it from the report's total. */
const FIGURES = [
  ['appointments', 'Appointments', (t) => String(t.appointments)],
  ['completed', 'Completed', (t) => String(t.completed)],
  ['no-shows', 'No-shows', (t) => `${t.no_shows} (${formatRate(t.no_show_rate)})`],
  ['cancelled', 'Cancelled', (t) => String(t.cancelled)],
  ['on-demand', 'On demand', (t) => String(t.on_demand)],
  ['duration', 'Duration, average / p90', (t) => `${formatMinutes(t.duration_avg_ms)} / ${formatMinutes(t.duration_p90_ms)}`],
  ['lobby-wait', 'Lobby wait, average / p90', (t) => `${formatMinutes(t.lobby_wait_avg_ms)} / ${formatMinutes(t.lobby_wait_p90_ms)}`],
];

export class AnalyticsPanel {
  /**
   * @param {HTMLElement} mount where the panel goes (appended)
   * @param {{token: () => string, onError: (e) => void}} hooks
   */
  constructor(mount, hooks) {
    this.hooks = hooks;
    this.loaded = false;
    this.seq = 0;
    const today = new Date();
    const monthAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 29);
    this.tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    this.from = h('input', { type: 'date', required: true, value: localDate(monthAgo), dataset: { testid: 'analytics-from' } });
    this.to = h('input', { type: 'date', required: true, value: localDate(today), dataset: { testid: 'analytics-to' } });
    this.group = h(
      'select',
      { dataset: { testid: 'analytics-group' } },
      h('option', { value: 'day' }, 'Day'),
      h('option', { value: 'week' }, 'Week'),
    );
    this.scope = h('select', { dataset: { testid: 'analytics-scope' } }, h('option', { value: '' }, 'Everything I may see'));
    this.status = h('p', { class: 'small muted', role: 'status', dataset: { testid: 'analytics-status' } }, '');
    this.figures = h('dl', { class: 'figures', dataset: { testid: 'analytics-figures' } });
    this.chart = h('figure', { class: 'chart', dataset: { testid: 'analytics-chart' } });
    this.table = h('table', { class: 'report-table', dataset: { testid: 'analytics-table' } });
    this.csvButton = h('button', { type: 'button', class: 'small secondary', dataset: { testid: 'analytics-csv-button' } }, 'Download CSV');
    this.csvButton.addEventListener('click', () => this.downloadCsv());
    const form = h(
      'form',
      { class: 'analytics-form', dataset: { testid: 'analytics-form' } },
      h('label', {}, 'From ', this.from),
      h('label', {}, 'To ', this.to),
      h('label', {}, 'By ', this.group),
      h('label', {}, 'For ', this.scope),
      h('button', { type: 'submit', class: 'small primary', dataset: { testid: 'analytics-show-button' } }, 'Show'),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.load();
    });
    this.root = h(
      'section',
      { class: 'card analytics-panel', dataset: { testid: 'analytics-panel' }, 'aria-labelledby': 'analytics-heading' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'analytics-heading' }, 'Appointments report'), this.csvButton),
      form,
      this.status,
      this.figures,
      this.chart,
      h('details', { class: 'report-details' }, h('summary', {}, 'Figures per period'), this.table),
    );
    mount.append(this.root);
  }

  /** The query of the report as the form says it now. */
  query(format = null) {
    const q = new URLSearchParams({ from: this.from.value, to: this.to.value, tz: this.tz, group: this.group.value });
    if (this.scope.value) q.set('department_id', this.scope.value);
    if (format) q.set('format', format);
    return q;
  }

  /** Loads the departments once (for the scope), then the report. */
  async start() {
    if (!this.loaded) {
      this.loaded = true;
      try {
        const departments = await api('GET', '/api/v1/departments', { token: this.hooks.token() });
        for (const d of departments) this.scope.append(h('option', { value: d.department_id }, d.name));
      } catch {
        // Not fatal: the report for "everything I may see" still works.
      }
    }
    await this.load();
  }

  async load() {
    const seq = ++this.seq;
    this.status.textContent = 'Loading…';
    this.root.dataset.state = 'loading';
    try {
      const report = await api('GET', `/api/v1/analytics/appointments?${this.query()}`, { token: this.hooks.token() });
      if (seq !== this.seq) return;
      this.render(report);
      this.status.textContent = report.periods.length
        ? `${report.from} to ${report.to}, ${report.tz}`
        : `No appointments from ${report.from} to ${report.to}.`;
      this.root.dataset.state = 'ready';
    } catch (e) {
      if (seq !== this.seq) return;
      this.status.textContent = `The report could not be loaded: ${describeError(e)}`;
      this.root.dataset.state = 'error';
    }
  }

  render(report) {
    const t = report.total;
    this.figures.replaceChildren(
      ...FIGURES.flatMap(([id, label, read]) => [
        h('dt', {}, label),
        h('dd', { dataset: { testid: `figure-${id}` } }, read(t)),
      ]),
    );
    this.renderChart(report);
    const head = h(
      'tr',
      {},
      ...['Period', 'Appointments', 'Completed', 'No-shows', 'Cancelled', 'Open', 'Average wait'].map((c) => h('th', { scope: 'col' }, c)),
    );
    const rows = report.periods.map((p) =>
      h(
        'tr',
        { dataset: { testid: 'analytics-row', period: p.period } },
        h('th', { scope: 'row' }, p.period),
        ...[p.appointments, p.completed, p.no_shows, p.cancelled, openCount(p)].map((v) => h('td', {}, String(v))),
        h('td', {}, formatMinutes(p.lobby_wait_avg_ms)),
      ),
    );
    this.table.replaceChildren(h('thead', {}, head), h('tbody', {}, ...rows));
  }

  renderChart(report) {
    const { width, height, left, bottom, top, right } = PLOT;
    // Every day (or week) of the range: one without appointments is an empty bar, not a gap.
    const { bars, ticks } = barChart(allPeriods(report), { width, height });
    const plot = svg('g', { transform: `translate(${left} ${top})` });
    for (const tick of ticks) {
      plot.append(
        svg('line', { class: 'grid', x1: 0, x2: width, y1: tick.y, y2: tick.y }),
        svg('text', { class: 'tick', x: -6, y: tick.y + 4, 'text-anchor': 'end' }, String(tick.value)),
      );
    }
    const every = Math.max(1, Math.ceil(bars.length / 8));
    bars.forEach((bar, i) => {
      const g = svg('g', { class: 'bar', 'data-testid': 'chart-bar', 'data-period': bar.period, 'data-total': bar.total });
      for (const s of bar.segments) {
        g.append(
          svg(
            'rect',
            { class: `seg ${s.cls}`, x: bar.x, y: s.y, width: bar.width, height: Math.max(0.5, s.height) },
            svg('title', {}, `${bar.period}: ${s.value} ${s.label.toLowerCase()}`),
          ),
        );
      }
      if (i % every === 0) {
        g.append(svg('text', { class: 'tick', x: bar.x + bar.width / 2, y: height + 16, 'text-anchor': 'middle' }, bar.period));
      }
      plot.append(g);
    });
    const summary = `Appointments per ${report.group}, ${report.from} to ${report.to}: ${report.total.appointments} in all.`;
    const chart = svg(
      'svg',
      {
        viewBox: `0 0 ${left + width + right} ${top + height + bottom}`,
        role: 'img',
        'aria-label': `${summary} The table "Figures per period" has the numbers.`,
      },
      plot,
    );
    const legend = h(
      'ul',
      { class: 'legend', 'aria-hidden': 'true' },
      ...SEGMENTS.map((s) => h('li', {}, h('span', { class: `swatch ${s.cls}` }), s.label)),
    );
    this.chart.replaceChildren(chart, h('figcaption', {}, summary), legend);
  }

  /** The report as CSV, fetched with the staff token (a plain link would carry none). */
  async downloadCsv() {
    try {
      const res = await fetch(`/api/v1/analytics/appointments?${this.query('csv')}`, {
        headers: { Authorization: `Bearer ${this.hooks.token()}`, Accept: 'text/csv' },
      });
      if (!res.ok) throw new Error(`the server answered ${res.status}`);
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: `appointments-${this.from.value}-${this.to.value}.csv`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      this.status.textContent = `The CSV could not be downloaded: ${describeError(e)}`;
    }
  }
}
