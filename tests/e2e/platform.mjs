// The Citrus platform for the end-to-end tests: a temporary data folder seeded with the
// citrus-backend CLI (users, agent, commander and hub keys), and the real citrus-backend,
// citrus-hub and citrus-agent processes on loopback ports. Every wait is bounded.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const USERS = {
  alice: 'alice-password-1',
  bob: 'bob-password-2',
};
/** The administrator the seed creates (user id 3, after alice and bob). */
export const ADMIN = { name: 'root', password: 'root-password-3' };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion: {code, stdout, stderr}. */
export function runCommand(exe, args, stdinText = '', timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const child = spawn(exe, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128, signal, stdout, stderr });
    });
    child.stdin.end(stdinText);
  });
}

function lastLine(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : '';
}

/**
 * GET over loopback with a bounded wait, on a fresh connection each time (the servers close the
 * connection after every plain HTTP answer): {status, body, headers}, status 0 when nothing answered.
 */
export function httpGet(url, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(res.headers)) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
        resolve({ status: res.statusCode, body, headers });
      });
      res.on('error', () => resolve({ status: 0, body: '', headers: new Headers() }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', () => resolve({ status: 0, body: '', headers: new Headers() }));
  });
}

/** A child process whose output goes to a log file. */
class Child {
  constructor(name, exe, args, env, logFile) {
    this.name = name;
    this.logFile = logFile;
    const out = fs.openSync(logFile, 'a');
    this.proc = spawn(exe, args, { stdio: ['ignore', out, out], env: { ...process.env, ...env } });
    fs.closeSync(out);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve(code ?? 128 + (os.constants.signals[signal] || 0)));
      this.proc.on('error', () => resolve(127));
    });
    this.exitCode = null;
    this.exited.then((c) => (this.exitCode = c));
  }

  get running() {
    return this.exitCode === null;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit status. */
  async stop(graceMs = 5000) {
    if (!this.running) return this.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.running) this.proc.kill('SIGKILL');
    }, graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  killNow() {
    if (this.running) this.proc.kill('SIGKILL');
  }

  log() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }
}

export class Platform {
  /**
   * buildDir: holds apps/{backend,hub,agent}/citrus-*; webRoot: the dashboard's files.
   */
  constructor({ buildDir, webRoot, stepDelayMs = 400 }) {
    this.exe = {
      backend: path.join(buildDir, 'apps/backend/citrus-backend'),
      hub: path.join(buildDir, 'apps/hub/citrus-hub'),
      agent: path.join(buildDir, 'apps/agent/citrus-agent'),
    };
    for (const [name, exe] of Object.entries(this.exe))
      if (!fs.existsSync(exe)) throw new Error(`citrus-${name} is not built: ${exe} is missing`);
    this.webRoot = webRoot;
    this.stepDelayMs = stepDelayMs;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'citrus-e2e-'));
    this.db = path.join(this.dir, 'citrus.db');
    this.jwtSecret = `e2e-${Math.random().toString(36).slice(2)}-${'s'.repeat(40)}`;
    this.children = new Set();
    this.backends = new Map();
  }

  async cli(args, stdinText = '') {
    const r = await runCommand(this.exe.backend, [...args, '--db', this.db], stdinText);
    if (r.code !== 0) throw new Error(`citrus-backend ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  }

  /** Users alice and bob, agent-1 trusting backend-1, backend-1 granted agent-1, hub-1. */
  async seed() {
    for (const [name, password] of Object.entries(USERS))
      await this.cli(['user', 'add', name, '--password-cost', 'minimum'], `${password}\n`);
    await this.cli(['user', 'add', ADMIN.name, '--admin', '--password-cost', 'minimum'], `${ADMIN.password}\n`);
    this.agentKey = lastLine(await this.cli(['agent', 'register', 'agent-1', '--trust', 'backend-1']));
    this.commanderKey = lastLine(await this.cli(['commander', 'register', 'backend-1', '--agents', 'agent-1']));
    this.hubKey = lastLine(await this.cli(['hub', 'register', 'hub-1']));
    for (const [what, key, prefix] of [
      ['agent', this.agentKey, 'ak_'],
      ['commander', this.commanderKey, 'ck_'],
      ['hub', this.hubKey, 'hk_'],
    ])
      if (!key.startsWith(prefix)) throw new Error(`unexpected ${what} key output: ${key}`);
    this.hubPort = await freePort();
  }

  start(name, exe, args, env = {}) {
    const child = new Child(name, exe, args, env, path.join(this.dir, `${name}.log`));
    this.children.add(child);
    return child;
  }

  async waitForPortFile(file, child, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!child.running) throw new Error(`${child.name} exited (${child.exitCode}):\n${child.log().slice(-3000)}`);
      try {
        const port = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
        if (port > 0) return port;
      } catch {
        // not written yet
      }
      await sleep(25);
    }
    throw new Error(`${child.name} did not start within ${timeoutMs} ms:\n${child.log().slice(-3000)}`);
  }

  /**
   * A backend named `name` on `port` (0: a free one), serving the dashboard. With `hub`, it is the
   * hub's commander backend-1; without, it never contacts the hub. The same JWT secret for all, so
   * a restarted backend accepts the tokens it issued before.
   */
  async startBackend({ name = 'backend', port = 0, tokenLifetimeS = 900, hub = true } = {}) {
    const listenPort = port || (await freePort());
    const origin = `http://127.0.0.1:${listenPort}`;
    const ready = path.join(this.dir, `${name}.port`);
    fs.rmSync(ready, { force: true });
    const env = { CITRUS_JWT_SECRET: this.jwtSecret, CITRUS_COMMANDER_KEY: hub ? this.commanderKey : '' };
    const child = this.start(name, this.exe.backend, [
      'serve',
      '--listen', `127.0.0.1:${listenPort}`,
      '--db', this.db,
      '--hub-url', `ws://127.0.0.1:${this.hubPort}/`,
      '--commander-id', 'backend-1',
      '--default-agent', 'agent-1',
      '--token-lifetime-s', String(tokenLifetimeS),
      '--web-root', this.webRoot,
      '--allowed-origin', origin,
      '--ready-file', ready,
    ], env);
    const bound = await this.waitForPortFile(ready, child);
    if (bound !== listenPort) throw new Error(`${name} listens on ${bound}, not ${listenPort}`);
    const backend = { name, port: listenPort, origin, child, tokenLifetimeS, hub };
    this.backends.set(name, backend);
    return backend;
  }

  /** Stops a backend (SIGTERM) and starts it again on the same port. */
  async stopBackend(name) {
    const backend = this.backends.get(name);
    const code = await backend.child.stop();
    this.children.delete(backend.child);
    return code;
  }

  async restartBackend(name) {
    const b = this.backends.get(name);
    return this.startBackend({ name, port: b.port, tokenLifetimeS: b.tokenLifetimeS, hub: b.hub });
  }

  async startHub(backendOrigin) {
    const ready = path.join(this.dir, 'hub.port');
    fs.rmSync(ready, { force: true });
    this.hub = this.start('hub', this.exe.hub, [
      '--listen', `127.0.0.1:${this.hubPort}`,
      '--db', this.db,
      '--verify-url', `${backendOrigin}/api/verify-agent`,
      '--hub-id', 'hub-1',
      '--ready-file', ready,
    ], { CITRUS_HUB_KEY: this.hubKey });
    await this.waitForPortFile(ready, this.hub);
  }

  startAgent() {
    this.sitesRoot = path.join(this.dir, 'sites');
    this.agent = this.start('agent', this.exe.agent, [
      '--hub-url', `ws://127.0.0.1:${this.hubPort}/`,
      '--agent-id', 'agent-1',
      '--trust', 'backend-1',
      '--root', this.sitesRoot,
      '--step-delay-ms', String(this.stepDelayMs),
    ], { CITRUS_AGENT_KEY: this.agentKey });
  }

  /** Until the hub has both backend-1 and agent-1 and the backend says its hub link is up. */
  async waitAgentOnline(backendOrigin, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const hub = await httpGet(`http://127.0.0.1:${this.hubPort}/metrics`);
      if (hub.status === 200 && /^citrus_hub_connections 2$/m.test(hub.body)) {
        const backend = await httpGet(`${backendOrigin}/metrics`);
        // The backend's link to the hub is up, and it knows agent-1 is online (when it reports that).
        const agentLine = /^citrus_backend_agent_online\{agent="agent-1"\} (\d+)$/m.exec(backend.body);
        if (/^citrus_backend_hub_link_online 1$/m.test(backend.body) && (!agentLine || agentLine[1] === '1')) return;
      }
      await sleep(250);
    }
    throw new Error(`the agent did not come online within ${timeoutMs} ms\n--- hub log:\n${this.hub.log().slice(-2000)}\n--- agent log:\n${this.agent.log().slice(-2000)}`);
  }

  /**
   * Stops every process still running (SIGTERM, as an operator would) and says how each ended:
   * [{name, code, sanitizer}] where `sanitizer` holds the lines of any AddressSanitizer,
   * LeakSanitizer or UndefinedBehaviorSanitizer report in its log.
   */
  async shutdown() {
    const running = [...this.children].filter((c) => c.running).reverse();
    const codes = await Promise.all(running.map((c) => c.stop(10000)));
    const pattern = /(ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer)/;
    return running.map((c, i) => ({
      name: c.name,
      code: codes[i],
      sanitizer: c.log().split('\n').filter((line) => pattern.test(line)),
    }));
  }

  /** Logs of every process, for a failing test's report. */
  logs() {
    return [...this.children]
      .map((c) => `--- ${c.name} (${c.logFile}), last lines:\n${c.log().split('\n').slice(-25).join('\n')}`)
      .join('\n');
  }

  async stop({ keep = false } = {}) {
    const children = [...this.children].reverse();
    await Promise.all(children.map((c) => c.stop()));
    this.children.clear();
    if (!keep) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** For process exit: kill whatever is still running, synchronously. */
  killAll() {
    for (const c of this.children) c.killNow();
  }
}
