// Unit tests of web-client/today-list.js's pure parts (no browser): which buttons a row of
// the console's "Today's appointments" offers, what its state and wait say, its order.
// Run by `node --test` from tests/browser.rs (`web_client_pure_modules`), or by hand:
//   node --test tests/browser/today-list.test.mjs

import assert from 'node:assert/strict';
import test from 'node:test';
import { byTime, stateLabel, todayActions, waitText } from '../../web-client/today-list.js';

const STATES = ['scheduled', 'waiting', 'late', 'in_progress', 'completed', 'no_show', 'cancelled'];
const guestWaiting = { in_call: 0, lobby: [{ participant_id: 'p_1', kind: 'guest' }] };
const staffWaiting = { in_call: 0, lobby: [{ participant_id: 'p_2', kind: 'staff' }] };

test('every state has words, and each row offers what its state allows', () => {
  const expected = {
    // [join, remind, cancel]
    scheduled: [true, true, true],
    waiting: [true, true, true],
    late: [true, true, true],
    in_progress: [true, false, false],
    completed: [false, false, false],
    no_show: [true, false, false],
    cancelled: [false, false, false],
  };
  for (const state of STATES) {
    assert.notEqual(stateLabel(state), state.replace('_', ' '), `${state} has its own words`);
    const can = todayActions({ state }, undefined);
    assert.deepEqual([can.join, can.remind, can.cancel], expected[state], state);
    assert.equal(can.admit, false, `${state}: nobody in the lobby, nothing to admit`);
  }
});

test('Admit only while a guest of it is in the lobby, and not once it is over', () => {
  for (const state of ['scheduled', 'waiting', 'late', 'no_show']) {
    assert.equal(todayActions({ state }, guestWaiting).admit, true, state);
    assert.equal(todayActions({ state }, staffWaiting).admit, false, `${state}: staff are not the guest`);
    assert.equal(todayActions({ state }, { in_call: 1, lobby: [] }).admit, false, state);
  }
  for (const state of ['in_progress', 'completed', 'cancelled']) {
    assert.equal(todayActions({ state }, guestWaiting).admit, false, state);
  }
});

test('the wait runs while the guest waits, stays once served, and is empty before', () => {
  const at = 1_000_000;
  assert.equal(waitText({ state: 'waiting', first_arrived_ms: at }, at + 75_000), 'waiting 1:15');
  assert.equal(waitText({ state: 'late', first_arrived_ms: at }, at + 5_000), 'waiting 0:05');
  assert.equal(waitText({ state: 'in_progress', lobby_wait_ms: 42_000, first_arrived_ms: at }, at + 999_000), 'waited 0:42');
  assert.equal(waitText({ state: 'completed', lobby_wait_ms: 0 }, at), 'waited 0:00');
  assert.equal(waitText({ state: 'scheduled', first_arrived_ms: null }, at), '');
  assert.equal(waitText({ state: 'no_show', first_arrived_ms: null }, at), '');
  assert.equal(waitText({ state: 'cancelled', first_arrived_ms: at }, at + 1000), '');
});

test('rows are in time order, on-demand ones by when they changed, ties by id', () => {
  const list = [
    { appointment_id: 'a_3', starts_at_ms: 3000, state_since_ms: 1 },
    { appointment_id: 'a_od', starts_at_ms: null, state_since_ms: 2500 },
    { appointment_id: 'a_2', starts_at_ms: 1000, state_since_ms: 9 },
    { appointment_id: 'a_1', starts_at_ms: 1000, state_since_ms: 9 },
  ];
  assert.deepEqual([...list].sort(byTime).map((a) => a.appointment_id), ['a_1', 'a_2', 'a_od', 'a_3']);
});
