/**
 * api.js: the REST calls the pages make, and the words people see for the
 * server's error codes and leave reasons. Errors from the API are
 * `{code, message}` with an HTTP status; `ApiError` keeps both.
 */

import { GatehouseError } from './gatehouse-client.js';

export class ApiError extends GatehouseError {
  constructor(status, code, message) {
    super(code, message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** Calls the API; resolves with the parsed body or throws an ApiError. */
export async function api(method, path, { token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', `The server could not be reached (${e.message}).`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.code || `http_${res.status}`, data?.message || res.statusText);
  }
  return data;
}

/** What a guest reads for an error code (links, joining, the call). */
const GUEST_MESSAGES = {
  link_expired: 'This link has expired. Please ask the person who invited you for a new one.',
  link_revoked: 'This link has been withdrawn and no longer works. Please ask the person who invited you for a new one.',
  link_used: 'This link has already been used. It works only once; please ask for a new one.',
  link_disabled: "This meeting's public link is turned off. Please use the personal invitation you were sent.",
  anonymous_join_disabled:
    'This meeting admits invited guests only. Please use the personal invitation link you were sent.',
  not_found: 'We could not find a meeting for this link. Please check the address, or ask for a new link.',
  meeting_ended: 'This meeting has ended.',
  meeting_full: 'This meeting is full at the moment. Please try again a little later.',
  invalid_display_name: 'Please enter a name of 1 to 64 characters.',
  rate_limited: 'Too many attempts from your connection. Please wait a minute and try again.',
  token_expired: 'Your access to this meeting has expired. Please open the link again.',
  unauthorized: 'Your access to this meeting is not valid. Please open the link again.',
  network: 'The server could not be reached. Please check your internet connection and try again.',
  connection_failed: 'We could not connect to the meeting. Please check your internet connection and try again.',
  chat_disabled: 'Chat is turned off for this meeting.',
  message_too_long: 'That message is too long.',
  wrong_appointment_state: 'This appointment can no longer be cancelled.',
  presenting_not_allowed: 'Screen sharing is not allowed for guests in this meeting.',
  forbidden: 'You are not allowed to do that.',
  not_in_call: 'You need to be in the call to do that.',
};

/** Human text for an error, falling back to the server's own message. */
export function describeError(err) {
  const code = err?.code;
  return GUEST_MESSAGES[code] || err?.message || 'Something went wrong. Please try again.';
}

/** Human text for why someone is out of the meeting (`left.reason`). */
export function describeLeft(reason, message) {
  switch (reason) {
    case 'left':
      return { title: 'You left the meeting', detail: 'You can close this page.' };
    case 'denied':
      return {
        title: 'You were not let in',
        detail: message ? `Reason given: ${message}` : 'The host did not let you into this meeting.',
      };
    case 'lobby_timeout':
      return {
        title: 'Nobody let you in in time',
        detail: message || 'The waiting time ran out. You can open the link again to retry.',
      };
    case 'removed':
      return {
        title: 'You were removed from the meeting',
        detail: message ? `Reason given: ${message}` : 'A host removed you from the call.',
      };
    case 'meeting_ended':
      return { title: 'The meeting has ended', detail: message || 'Thank you for joining.' };
    case 'replaced':
      return {
        title: 'You joined from somewhere else',
        detail: 'This meeting was opened in another tab or on another device, so this page was disconnected.',
      };
    default:
      return {
        title: 'The connection was lost',
        detail: message || 'We could not reconnect you to the meeting.',
      };
  }
}

/** `m:ss` (or `h:mm:ss`) for a duration in milliseconds. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** "15 minutes", "1 minute", "45 seconds". */
export function formatSpan(secs) {
  if (secs >= 120 || (secs >= 60 && secs % 60 === 0)) {
    const m = Math.round(secs / 60);
    return `${m} minute${m === 1 ? '' : 's'}`;
  }
  return `${secs} second${secs === 1 ? '' : 's'}`;
}
