// Unit tests of web-client/tile-needs.js (no browser): which simulcast quality a camera
// tile asks for from its size and visibility. Run by `node --test` from tests/browser.rs
// (`web_client_pure_modules`), or by hand: node --test tests/browser/tile-needs.test.mjs

import assert from 'node:assert/strict';
import test from 'node:test';
import { qualityFor, TileNeeds } from '../../web-client/tile-needs.js';

test('hidden, empty or unmeasured tiles need nothing', () => {
  assert.equal(qualityFor({ visible: false, width: 1280, height: 720 }), 'off');
  assert.equal(qualityFor({ visible: true, width: 0, height: 0 }), 'off');
  assert.equal(qualityFor({ visible: true, width: Number.NaN, height: 200 }), 'off');
});

test('small tiles need the low layer, mid-sized the medium, large the full one', () => {
  assert.equal(qualityFor({ visible: true, width: 240, height: 135 }), 'low');
  assert.equal(qualityFor({ visible: true, width: 400, height: 225 }), 'low');
  assert.equal(qualityFor({ visible: true, width: 640, height: 360 }), 'medium');
  assert.equal(qualityFor({ visible: true, width: 1000, height: 560 }), 'high');
  // A tall, narrow tile shows a 16:9 picture as wide as its height allows.
  assert.equal(qualityFor({ visible: true, width: 200, height: 500 }), 'high');
});

test('a high-density screen needs more pixels for the same tile', () => {
  assert.equal(qualityFor({ visible: true, width: 300, height: 169, pixelRatio: 1 }), 'low');
  assert.equal(qualityFor({ visible: true, width: 300, height: 169, pixelRatio: 2 }), 'medium');
  assert.equal(qualityFor({ visible: true, width: 300, height: 169, pixelRatio: 0 }), 'low', 'a nonsense ratio counts as 1');
});

test('TileNeeds tells each change of a watched tile, and nothing for one it forgot', () => {
  const told = [];
  const needs = new TileNeeds((trackId, quality) => told.push(`${trackId}:${quality}`));
  const video = { dataset: {}, getBoundingClientRect: () => ({ width: 1280, height: 720 }) };
  needs.watch(video, 't_1');
  needs.update(video, { width: 320, height: 180 });
  needs.update(video, { intersecting: false });
  needs.update(video, { intersecting: true });
  assert.deepEqual(told, ['t_1:high', 't_1:low', 't_1:off', 't_1:low']);
  assert.equal(video.dataset.quality, 'low');
  needs.watch(video, null);
  needs.update(video, { width: 1280, height: 720 });
  assert.equal(told.length, 4);
});
