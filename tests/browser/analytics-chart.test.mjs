// Unit tests of web-client/analytics-chart.js (pure, no browser): the console's appointments
// chart. Run by `node --test` from tests/browser.rs (`web_client_pure_modules`), or by hand:
//   node --test tests/browser/analytics-chart.test.mjs

import assert from 'node:assert/strict';
import test from 'node:test';
import { allPeriods, axis, barChart, formatMinutes, formatRate, isoWeek, localDate, openCount } from '../../web-client/analytics-chart.js';

const period = (name, f) => ({ period: name, appointments: 0, completed: 0, no_shows: 0, cancelled: 0, ...f });

test('the axis tops out at a round number at or above the largest bar', () => {
  assert.deepEqual(axis(0), { top: 1, ticks: [0, 1] });
  assert.deepEqual(axis(1), { top: 1, ticks: [0, 1] });
  assert.deepEqual(axis(3), { top: 3, ticks: [0, 1, 2, 3] });
  assert.deepEqual(axis(7), { top: 8, ticks: [0, 2, 4, 6, 8] });
  assert.deepEqual(axis(42), { top: 50, ticks: [0, 10, 20, 30, 40, 50] });
  assert.equal(axis(1234).top, 1500);
  for (const max of [1, 2, 9, 11, 99, 101, 999, 12345]) {
    const { top, ticks } = axis(max);
    assert.ok(top >= max, `${max}: ${top}`);
    assert.ok(ticks.length >= 2 && ticks.length <= 11, `${max}: ${ticks}`);
    assert.equal(ticks.at(-1), top);
  }
});

test('open is what is neither completed, a no-show nor cancelled', () => {
  assert.equal(openCount(period('a', { appointments: 9, completed: 4, no_shows: 1, cancelled: 2 })), 2);
  assert.equal(openCount(period('a', { appointments: 1, completed: 1 })), 0);
  assert.equal(openCount({}), 0);
});

test('bars stack completed, no-shows, cancelled and open from the bottom, to scale', () => {
  const { bars, ticks, top } = barChart(
    [period('2026-12-01', { appointments: 10, completed: 5, no_shows: 2, cancelled: 1 }), period('2026-12-02', { appointments: 4, completed: 4 })],
    { width: 200, height: 100 },
  );
  assert.equal(top, 10);
  assert.equal(bars.length, 2);
  const [a, b] = bars;
  assert.deepEqual(a.segments.map((s) => [s.key, s.value]), [['completed', 5], ['no_shows', 2], ['cancelled', 1], ['open', 2]]);
  // Bottom up, touching, filling exactly the bar's share of the height.
  assert.equal(a.segments[0].y + a.segments[0].height, 100);
  for (let i = 1; i < a.segments.length; i++) {
    assert.ok(Math.abs(a.segments[i].y + a.segments[i].height - a.segments[i - 1].y) < 1e-9);
  }
  assert.equal(a.segments.at(-1).y, 0, 'the tallest bar reaches the top');
  assert.deepEqual(b.segments.map((s) => s.key), ['completed'], 'empty segments are left out');
  assert.equal(b.segments[0].height, 40);
  // Side by side, inside the plot, in order.
  assert.ok(a.x >= 0 && a.x + a.width <= 100 && b.x >= 100 && b.x + b.width <= 200);
  assert.deepEqual(ticks.map((t) => t.y), ticks.map((t) => 100 - t.value * 10));
});

test('no periods: no bars, still an axis', () => {
  const { bars, ticks } = barChart([], { width: 200, height: 100 });
  assert.deepEqual(bars, []);
  assert.deepEqual(ticks.map((t) => t.value), [0, 1]);
});

test('figures read as people say them', () => {
  assert.equal(formatMinutes(null), '—');
  assert.equal(formatMinutes(45_000), '45 s');
  assert.equal(formatMinutes(14 * 60_000 + 10_000), '14 min');
  assert.equal(formatMinutes(125 * 60_000), '2 h 05 min');
  assert.equal(formatRate(null), '—');
  assert.equal(formatRate(0.0571), '5.7 %');
  assert.equal(localDate(new Date(2026, 0, 5, 23, 59)), '2026-01-05');
});

test('ISO weeks: Thursday decides the year, across year ends', () => {
  const w = (d) => isoWeek(Date.parse(`${d}T00:00:00Z`));
  assert.equal(w('2026-12-07'), '2026-W50');
  assert.equal(w('2026-12-13'), '2026-W50', 'Sunday ends the week');
  assert.equal(w('2026-12-31'), '2026-W53');
  assert.equal(w('2027-01-03'), '2026-W53', 'early January in the last week of 2026');
  assert.equal(w('2027-01-04'), '2027-W01');
  assert.equal(w('2024-12-30'), '2025-W01', 'late December in the first week of 2025');
  assert.equal(w('2021-01-01'), '2020-W53');
});

test('every day or week of the range is a period, empty ones with zeros', () => {
  const p = period('2026-12-02', { appointments: 3, completed: 2 });
  const days = allPeriods({ from: '2026-11-29', to: '2026-12-03', group: 'day', periods: [p] });
  assert.deepEqual(days.map((d) => d.period), ['2026-11-29', '2026-11-30', '2026-12-01', '2026-12-02', '2026-12-03']);
  assert.equal(days[3], p, 'the report period itself');
  assert.deepEqual(days[0], period('2026-11-29', {}));
  assert.deepEqual(barChart(days, { width: 100, height: 50 }).bars.map((b) => b.total), [0, 0, 0, 3, 0]);
  const weeks = allPeriods({ from: '2026-12-24', to: '2027-01-12', group: 'week', periods: [period('2026-W53', { appointments: 1 })] });
  assert.deepEqual(weeks.map((d) => d.period), ['2026-W52', '2026-W53', '2027-W01', '2027-W02']);
  assert.equal(weeks[1].appointments, 1);
  assert.deepEqual(allPeriods({ from: '2026-12-03', to: '2026-12-03', group: 'day', periods: [] }).map((d) => d.period), ['2026-12-03']);
});
