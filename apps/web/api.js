// The REST API of citrus-backend, and the words the dashboard uses for every failure.
//
// Every error body of the API is {"success":false,"message":"..."} with a short public message, and
// "field" when the error is about one field; describeError() turns the status and that message into a
// sentence for the person at the screen.

export const EXPIRED_MESSAGE = 'Your session has expired, please log in again.';
export const INVALID_SESSION_MESSAGE = 'Your session is no longer valid, please log in again.';
export const LOGGED_OUT_MESSAGE = 'You have logged out.';
export const ENDED_BY_ADMIN_MESSAGE = 'An administrator ended your session. Ask them if you think this is a mistake.';

/**
 * A failed API call: `status` 0 means the server could not be reached at all; `field` is the request
 * field the server named (its answer's "field"), or ''.
 */
export class ApiError extends Error {
  constructor(status, serverMessage, retryAfter, field) {
    super(serverMessage || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.serverMessage = serverMessage || '';
    this.retryAfter = retryAfter || 0;
    this.field = field || '';
  }
}

/**
 * One JSON request to the same origin. Resolves with the parsed body of a 2xx answer whose
 * "success" is not false; rejects with an ApiError otherwise.
 */
export async function request(method, path, { token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'same-origin', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, '', 0);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok || data === null || typeof data !== 'object' || data.success === false) {
    const message = data && typeof data.message === 'string' ? data.message : '';
    const retry = Number.parseInt(response.headers.get('Retry-After') || '', 10);
    const field = data && typeof data.field === 'string' ? data.field : '';
    throw new ApiError(response.ok ? 500 : response.status, message, Number.isFinite(retry) ? retry : 0, field);
  }
  return data;
}

/** A wait of `n` seconds in words: seconds up to two minutes, whole minutes (rounded up) beyond. */
function seconds(n) {
  if (n >= 120) return `${Math.ceil(n / 60)} minutes`;
  return n === 1 ? '1 second' : `${n} seconds`;
}

/**
 * A sentence for a failed call. `context` says what the person was doing: 'login', 'site-form'
 * (creating or editing a site), 'site' (opening one), 'list', 'deploy', 'delete'.
 */
export function describeError(err, context) {
  if (!(err instanceof ApiError)) return 'Something went wrong in this page. Reload it and try again.';
  const m = err.serverMessage;
  switch (err.status) {
    case 0:
      return 'The Citrus server cannot be reached. Check your connection and try again.';
    case 400:
      if (context === 'site-form' && (err.field === 'name' || err.field === 'url' || m.startsWith('A field has an invalid value')))
        return 'Check the site details: the name needs 1 to 100 characters on one line, and the URL must start with http:// or https:// (at most 255 characters).';
      if (m.startsWith('A field is too long')) return 'Something you entered is too long. Shorten it and try again.';
      if (context === 'login') return 'Enter both your username and your password.';
      if (context === 'admin' && m === 'A field has an invalid value')
        return 'Check what you entered: ids use letters, digits and . _ : - (up to 128); user names 1 to 64 letters, digits and . _ @ + -.';
      return 'The server could not accept this request. Check what you entered and try again.';
    case 401:
      if (context === 'login')
        return m === 'Invalid username or password'
          ? 'The username or password is not right. Check them and try again.'
          : 'Logging in did not work. Check your username and password and try again.';
      return m === 'Session expired' ? EXPIRED_MESSAGE : INVALID_SESSION_MESSAGE;
    case 403:
      if (m === 'Unauthorized access') return 'You do not have access to this site.';
      if (m === 'This account is disabled') return 'This account is disabled. Ask an administrator to enable it.';
      return 'Your account is not allowed to do this.';
    case 404:
      if (context === 'admin') return 'That no longer exists. The list has been reloaded.';
      return 'That page or site does not exist.';
    case 409:
      if (m === 'Already exists') return 'That id is already registered. Choose another one, or rotate the existing key.';
      return m ? `${m}.` : 'That conflicts with what is already there.';
    case 413:
      return 'What you entered is too long. Shorten it and try again.';
    case 429:
      if (m.startsWith('Too many failed attempts'))
        return err.retryAfter > 0
          ? `Too many failed login attempts from here. Wait ${seconds(err.retryAfter)}, then try again.`
          : 'Too many failed login attempts from here. Wait a few minutes, then try again.';
      return err.retryAfter > 0
        ? `Too many requests in a short time. Wait ${seconds(err.retryAfter)} and try again.`
        : 'Too many requests in a short time. Wait a moment and try again.';
    case 503:
      if (m === 'Hosting service temporarily unreachable')
        return context === 'deploy'
          ? 'The hosting service cannot be reached right now, so the deploy did not start. Try again in a minute.'
          : 'The hosting service cannot be reached right now. Try again in a minute.';
      if (m === 'Service is shutting down') return 'The Citrus server is restarting. Try again in a moment.';
      return 'The service is busy or unavailable right now. Try again in a moment.';
    default:
      if (err.status >= 500) return 'Something went wrong on the Citrus server. Try again in a moment.';
      return 'The request did not work. Try again.';
  }
}

const CODE_MESSAGES = {
  agent_offline: 'The hosting server of this site is offline. Try again later.',
  agent_disconnected: 'The hosting server disconnected before it finished.',
  agent_not_granted: 'The hosting server of this site is not available to Citrus right now.',
  request_timeout: 'The hosting server did not answer in time.',
  hub_unavailable: 'The hosting service cannot be reached right now. Try again in a minute.',
  too_many_in_flight: 'Too many operations are running at once. Try again in a moment.',
  rate_limited: 'Too many requests in a short time. Wait a moment and try again.',
  unauthorized_access: 'You do not have access to this site.',
  untrusted_commander: 'The hosting server refused the request from Citrus.',
  storage_unavailable: 'The service is busy or unavailable right now. Try again in a moment.',
  storage_full: 'The service is busy or unavailable right now. Try again in a moment.',
  shutting_down: 'The Citrus server is restarting. Try again in a moment.',
  internal_error: 'Something went wrong while doing this. Try again in a moment.',
};

/** A sentence for a failure pushed over the WebSocket (a failed result or an error message). */
export function describeCode(code, message) {
  if (code && Object.prototype.hasOwnProperty.call(CODE_MESSAGES, code)) return CODE_MESSAGES[code];
  if (message && message !== 'Internal error' && message !== 'Operation failed') return `${message}.`.replace(/\.\.$/, '.');
  return 'The operation failed. Try again in a moment.';
}
