// The live connection to citrus-backend: one WebSocket on the page's own origin, path /ws.
//
// The token travels in the first message ({"v":1,"type":"auth","token":...}), never in the URL; a
// fresh token is handed over on the same socket with {"v":1,"type":"reauth","token":...}. The
// server closes with 4003 when the session's token expired, 4002 when it refused the token and 4012
// when an administrator disabled or deleted the account (or the token logged out): all end the session. Any other close is a lost connection: it is retried with exponential
// backoff and full jitter, authenticating again with the token held in memory.

export const CLOSE_AUTH_FAILED = 4002;
export const CLOSE_TOKEN_EXPIRED = 4003;
/** The account was disabled or deleted by an administrator, or this token logged out. */
export const CLOSE_REVOKED = 4012;

const MIN_DELAY_MS = 250;
const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;

export class LiveConnection {
  /**
   * handlers: getToken() -> string; onAuthOk(message, {reconnected}); onMessage(message);
   * onExpired(); onRejected(); onRevoked(reason); onState('connecting' | 'live' | 'reconnecting').
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.stopped = true;
    this.authenticated = false;
    this.expired = false;
    this.attempt = 0;
    this.everConnected = false;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.handlers.onState('connecting');
    this.connect();
  }

  /** Closes the socket for good (log out, session over). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) ws.close(1000, 'session over');
  }

  /** Hands a fresh token to the server on the open socket; false when there is none right now. */
  reauth(token) {
    if (!this.ws || !this.authenticated || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: 1, type: 'reauth', token }));
    return true;
  }

  connect() {
    if (this.stopped) return;
    const url = new URL('/ws', window.location.href);
    url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.hash = '';
    url.search = '';
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.authenticated = false;
    this.expired = false;
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      ws.send(JSON.stringify({ v: 1, type: 'auth', token: this.handlers.getToken() }));
    });
    ws.addEventListener('message', (event) => {
      if (this.ws !== ws || typeof event.data !== 'string') return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!message || typeof message !== 'object' || message.v !== 1) return;
      if (message.type === 'auth_ok') {
        const reconnected = this.everConnected && !this.authenticated;
        const first = !this.authenticated;
        this.authenticated = true;
        this.everConnected = true;
        this.attempt = 0;
        if (first) this.handlers.onState('live');
        this.handlers.onAuthOk(message, { reconnected, first });
        return;
      }
      if (message.type === 'error' && message.code === 'token_expired') {
        this.expired = true;  // the close (4003) follows
        return;
      }
      this.handlers.onMessage(message);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.authenticated = false;
      if (this.stopped) return;
      if (event.code === CLOSE_TOKEN_EXPIRED || this.expired) {
        this.stopped = true;
        this.handlers.onExpired();
        return;
      }
      if (event.code === CLOSE_REVOKED) {
        this.stopped = true;
        this.handlers.onRevoked(event.reason);
        return;
      }
      if (event.code === CLOSE_AUTH_FAILED) {
        this.stopped = true;
        this.handlers.onRejected();
        return;
      }
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    this.handlers.onState('reconnecting');
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(this.attempt, 10));
    this.attempt += 1;
    const delay = MIN_DELAY_MS + Math.floor(Math.random() * ceiling);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}
