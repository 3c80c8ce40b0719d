// Citrus dashboard: log in, list your sites, create, edit, delete and deploy them, and watch deploys
// live. Served by citrus-backend from the same origin as the API and the WebSocket; the
// Content-Security-Policy allows only this origin's scripts, styles and connections.
//
// The session token is held in the `session` variable of this module and nowhere else: not in web
// storage, a cookie or the URL. Reloading the page means logging in again.
// Everything shown is built with DOM calls and textContent, never by parsing HTML.

import { createAdmin } from './admin.js';
import {
  ApiError,
  ENDED_BY_ADMIN_MESSAGE,
  EXPIRED_MESSAGE,
  INVALID_SESSION_MESSAGE,
  LOGGED_OUT_MESSAGE,
  describeCode,
  describeError,
  request,
} from './api.js';
import { LiveConnection } from './live.js';
import { isSiteUrl, serverFieldProblem, siteFieldProblems } from './site_fields.js';

const $ = (id) => document.getElementById(id);

/** Thrown by call() when the session ended (or changed) while a request was on its way. */
class SessionEnded extends Error {}

// ----------------------------------------------------------------------------------------- state

/** {token, user, expiresAt, refreshTimer, expiryTimer, live} while logged in, else null. */
let session = null;
/** The caller's sites by id, as the API last described them. */
const sites = new Map();
/** Deploys shown with a progress bar, by site id: {percent, steps, state, message, request}. */
const deploys = new Map();
/** The table rows of the sites list, by site id. */
const rows = new Map();
let sitesLoaded = false;
/** The site form: null (closed), {mode:'create'} or {mode:'edit', id}. */
let formMode = null;
/** The site shown by #/sites/<id>: {id, site, error, panel}. */
let detail = null;
let listReload = null;
/** The administration console (admin.js), created by init(). */
let admin = null;

function isAdmin() {
  return session !== null && session.user.role === 'admin';
}

// ------------------------------------------------------------------------------------ formatting

const STATUS = {
  creating: { icon: '↻', text: 'Setting up…', tone: 'busy' },
  created: { icon: '○', text: 'Not deployed yet', tone: 'idle' },
  deploying: { icon: '↻', text: 'Deploying…', tone: 'busy' },
  deployed: { icon: '✓', text: 'Deployed', tone: 'ok' },
  failed: { icon: '✕', text: 'Failed', tone: 'bad' },
};

function statusOf(site) {
  const known = STATUS[site.deploy_status];
  if (known) return known;
  const raw = String(site.deploy_status || 'unknown');
  return { icon: '?', text: raw.charAt(0).toUpperCase() + raw.slice(1), tone: 'idle' };
}

function statusBadge(site) {
  const s = statusOf(site);
  const badge = document.createElement('span');
  badge.className = `status status-${s.tone}`;
  badge.dataset.status = String(site.deploy_status || '');
  const icon = document.createElement('span');
  icon.className = 'status-icon';
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = s.icon;
  const text = document.createElement('span');
  text.className = 'status-text';
  text.textContent = s.text;
  badge.append(icon, text);
  return badge;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function dateElement(unixSeconds, never) {
  if (typeof unixSeconds !== 'number' || !Number.isFinite(unixSeconds) || unixSeconds <= 0) {
    const span = document.createElement('span');
    span.className = 'muted';
    span.textContent = never;
    return span;
  }
  const date = new Date(unixSeconds * 1000);
  const time = document.createElement('time');
  time.dateTime = date.toISOString();
  time.textContent = dateFormat.format(date);
  return time;
}

function deployerElement(site) {
  const span = document.createElement('span');
  if (site.deployer_id) {
    span.textContent = site.deployer_id;
  } else {
    span.className = 'muted';
    span.textContent = 'None yet';
  }
  return span;
}

/** A link only for what the backend accepts as a site address (isSiteUrl): a row stored before it
 * checked addresses is shown as plain text. */
function urlElement(url) {
  if (isSiteUrl(url)) {
    const a = document.createElement('a');
    a.href = url;
    a.textContent = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.className = 'url';
    return a;
  }
  const span = document.createElement('span');
  span.textContent = String(url ?? '');
  return span;
}

function quoted(name) {
  return `“${name}”`;
}

function show(element, text) {
  element.textContent = text;
  element.hidden = false;
}

function hide(element) {
  element.hidden = true;
  element.textContent = '';
}

function announce(text) {
  const region = $('announcer');
  region.textContent = '';
  // A separate task, so that the same sentence twice is announced twice.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** A site as the API describes it, owned by the caller; anything else is ignored. */
function isOwnSite(site) {
  return (
    site !== null &&
    typeof site === 'object' &&
    Number.isSafeInteger(site.id) &&
    site.id > 0 &&
    session !== null &&
    site.user_id === session.user.id
  );
}

// --------------------------------------------------------------------------------------- session

async function call(method, path, body) {
  const current = session;
  if (!current) throw new SessionEnded();
  try {
    const data = await request(method, path, { token: current.token, body });
    if (session !== current) throw new SessionEnded();
    return data;
  } catch (err) {
    if (session !== current) throw new SessionEnded();
    if (err instanceof ApiError && err.status === 401) {
      endSession(err.serverMessage === 'Session expired' ? EXPIRED_MESSAGE : INVALID_SESSION_MESSAGE);
      throw new SessionEnded();
    }
    throw err;
  }
}

/** Learns how long the token lives and plans its refresh: a minute before expiry (half-way for short lifetimes). */
function scheduleRefresh(expiresIn) {
  if (!session || typeof expiresIn !== 'number' || !(expiresIn >= 0)) return;
  session.expiresAt = Date.now() + expiresIn * 1000;
  clearTimeout(session.refreshTimer);
  clearTimeout(session.expiryTimer);
  const lead = expiresIn > 120 ? expiresIn - 60 : expiresIn / 2;
  session.refreshTimer = setTimeout(refreshToken, lead * 1000);
  // The server closes the socket with 4003 when the token expires; this covers a socket that is down.
  const current = session;
  session.expiryTimer = setTimeout(() => {
    if (session === current) endSession(EXPIRED_MESSAGE);
  }, expiresIn * 1000 + 2000);
}

async function refreshToken() {
  const current = session;
  if (!current) return;
  try {
    const data = await request('POST', '/api/token/refresh', { token: current.token });
    if (session !== current) return;
    current.token = data.token;
    scheduleRefresh(data.expires_in);
    current.live.reauth(data.token);  // when the socket is down, the new token is used on reconnect
  } catch (err) {
    if (session !== current) return;
    if (err instanceof ApiError && err.status === 401) {
      endSession(err.serverMessage === 'Session expired' ? EXPIRED_MESSAGE : INVALID_SESSION_MESSAGE);
      return;
    }
    // The network or the server is having trouble: try again while the token is still valid.
    const left = current.expiresAt - Date.now();
    if (left > 1000) {
      clearTimeout(current.refreshTimer);
      current.refreshTimer = setTimeout(refreshToken, Math.min(5000, left / 2));
    }
  }
}

function startSession(data) {
  session = {
    token: data.token,
    user: data.user,
    expiresAt: 0,
    refreshTimer: null,
    expiryTimer: null,
    live: null,
  };
  scheduleRefresh(data.expires_in);
  session.live = new LiveConnection({
    getToken: () => (session ? session.token : ''),
    onAuthOk: (message, { reconnected }) => {
      scheduleRefresh(message.expires_in);
      if (reconnected) {
        hideBanner();
        announce('Connection restored.');
        reloadSites();
      }
    },
    onMessage: handlePush,
    onExpired: () => endSession(EXPIRED_MESSAGE),
    onRejected: () => endSession(INVALID_SESSION_MESSAGE),
    onRevoked: (reason) => endSession(reason === 'logged out' ? LOGGED_OUT_MESSAGE : ENDED_BY_ADMIN_MESSAGE),
    onState: setConnectionState,
  });
  $('user-name').textContent = data.user.name;
  $('main-nav').hidden = data.user.role !== 'admin';
  $('session-bar').hidden = false;
  session.live.start();
  sitesLoaded = false;
  loadSites();
  route();
}

/** Forgets the session and everything of the user, and shows the login form with `message`. */
function endSession(message) {
  const current = session;
  session = null;
  if (current) {
    clearTimeout(current.refreshTimer);
    clearTimeout(current.expiryTimer);
    current.live.stop();
  }
  clearTimeout(listReload);
  sites.clear();
  deploys.clear();
  for (const r of rows.values()) {
    r.row.remove();
    r.progressRow.remove();
  }
  rows.clear();
  detail = null;
  clearDetailView();
  admin.clear();
  $('admin-view').hidden = true;
  $('main-nav').hidden = true;
  sitesLoaded = false;
  closeSiteForm();
  const dialog = $('delete-dialog');
  if (dialog.open) dialog.close('cancel');
  hideBanner();
  $('session-bar').hidden = true;
  $('user-name').textContent = '';
  hide($('sites-error'));
  $('announcer').textContent = '';
  $('delete-text').textContent = '';
  showLogin(message);
}

/** Empties the one-site view, so that nothing of a site stays in the page. */
function clearDetailView() {
  $('site-title').textContent = 'Site';
  $('site-refusal').hidden = true;
  $('site-refusal-text').textContent = '';
  $('site-details').hidden = true;
  for (const id of ['detail-name', 'detail-url', 'detail-status', 'detail-deployer', 'detail-last-deploy', 'detail-created', 'detail-progress'])
    $(id).replaceChildren();
  hide($('site-action-error'));
}

function setConnectionState(state) {
  const el = $('connection-state');
  el.dataset.state = state;
  const icon = el.querySelector('.connection-icon');
  const text = el.querySelector('.connection-text');
  if (state === 'live') {
    icon.textContent = '●';
    text.textContent = 'Live updates on';
  } else if (state === 'reconnecting') {
    icon.textContent = '⚠';
    text.textContent = 'Reconnecting…';
    showBanner('Connection lost — reconnecting…');
  } else {
    icon.textContent = '◌';
    text.textContent = 'Connecting…';
  }
}

function showBanner(text) {
  $('banner-text').textContent = text;
  $('banner').hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
}

// ----------------------------------------------------------------------------------------- login

const SLOW_LOGIN_AFTER_MS = 1500;
const SLOW_LOGIN_MESSAGE =
  'Still checking… After failed attempts on an account, its logins are slowed down for a few minutes.';

function showLogin(message) {
  $('sites-view').hidden = true;
  $('site-view').hidden = true;
  $('admin-view').hidden = true;
  $('login-view').hidden = false;
  const notice = $('login-notice');
  if (message) show(notice, message);
  else hide(notice);
  hide($('login-error'));
  $('password').value = '';
  const submit = $('login-submit');
  submit.disabled = false;
  submit.textContent = 'Log in';
  document.title = 'Log in — Citrus';
  $('username').focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  const error = $('login-error');
  if (!username || !password) {
    show(error, 'Enter both your username and your password.');
    (username ? $('password') : $('username')).focus();
    return;
  }
  hide(error);
  const submit = $('login-submit');
  submit.disabled = true;
  submit.textContent = 'Logging in…';
  // After failed attempts on an account, the server holds every answer for it back a few seconds
  // (at most 8): say so rather than look stuck.
  const notice = $('login-notice');
  const slowTimer = setTimeout(() => show(notice, SLOW_LOGIN_MESSAGE), SLOW_LOGIN_AFTER_MS);
  try {
    const data = await request('POST', '/api/login', { body: { username, password } });
    if (!data.token || !data.user || typeof data.user.id !== 'number') throw new ApiError(500, '');
    $('password').value = '';
    hide(notice);
    startSession(data);
  } catch (err) {
    show(error, describeError(err, 'login'));
    $('password').focus();
  } finally {
    clearTimeout(slowTimer);
    if (notice.textContent === SLOW_LOGIN_MESSAGE) hide(notice);
    submit.disabled = false;
    submit.textContent = 'Log in';
  }
}

/** Tells the server first (the token stops working there, on every backend), then forgets the session. */
async function onLogout() {
  const current = session;
  if (!current) return;
  const button = $('logout');
  button.disabled = true;
  current.live.stop();  // the server closes this token's socket too; no reconnect meanwhile
  let told = true;
  try {
    await request('POST', '/api/logout', { token: current.token });
  } catch (err) {
    // An expired or already refused token is logged out anyway; anything else is worth saying.
    told = err instanceof ApiError && err.status === 401;
  } finally {
    button.disabled = false;
  }
  if (session !== current) return;
  endSession(told ? LOGGED_OUT_MESSAGE
    : 'You have logged out on this device, but the server could not be told: your session ends when it expires.');
}

// ---------------------------------------------------------------------------------------- routing

/** "#/sites/<id>" opens one site, "#/admin" the administration (administrators); anything else is the list. */
function parseRoute() {
  const match = /^#\/sites\/(\d{1,15})\/?$/.exec(window.location.hash);
  if (match) return { view: 'site', id: Number(match[1]) };
  if (/^#\/admin\/?$/.test(window.location.hash) && isAdmin()) return { view: 'admin' };
  return { view: 'list' };
}

function route() {
  if (!session) {
    showLogin($('login-notice').hidden ? '' : $('login-notice').textContent);
    return;
  }
  $('login-view').hidden = true;
  const r = parseRoute();
  for (const [id, current] of [['nav-admin', r.view === 'admin'], ['nav-sites', r.view !== 'admin']]) {
    if (current) $(id).setAttribute('aria-current', 'page');
    else $(id).removeAttribute('aria-current');
  }
  if (r.view === 'admin') {
    detail = null;
    clearDetailView();
    $('sites-view').hidden = true;
    $('site-view').hidden = true;
    $('admin-view').hidden = false;
    document.title = 'Administration — Citrus';
    $('admin-title').focus();
    admin.show();
    return;
  }
  admin.clear();
  $('admin-view').hidden = true;
  if (r.view === 'site' && r.id > 0) {
    $('sites-view').hidden = true;
    $('site-view').hidden = false;
    openSite(r.id);
  } else {
    detail = null;
    clearDetailView();
    $('site-view').hidden = true;
    $('sites-view').hidden = false;
    document.title = 'Your sites — Citrus';
    renderSites();
    $('sites-title').focus();
  }
}

// ------------------------------------------------------------------------------------- sites list

async function loadSites() {
  try {
    const data = await call('GET', '/api/sites');
    const list = Array.isArray(data.sites) ? data.sites.filter(isOwnSite) : [];
    const before = new Map(sites);
    sites.clear();
    for (const site of list) sites.set(site.id, newer(site, before.get(site.id)));
    // A deploy that ended while the page was not listening: its row now says how it ended.
    for (const [id, entry] of deploys) {
      const site = sites.get(id);
      if (!site) deploys.delete(id);
      else if (entry.state === 'running' && site.deploy_status !== 'deploying') finishDeploy(id, site.deploy_status === 'deployed', '', '');
    }
    sitesLoaded = true;
    hide($('sites-error'));
    renderSites();
    if (detail && detail.site && sites.has(detail.id)) {
      detail.site = sites.get(detail.id);
      renderDetail();
    }
  } catch (err) {
    if (err instanceof SessionEnded) return;
    $('sites-loading').hidden = true;
    show($('sites-error'), `Your sites could not be loaded. ${describeError(err, 'list')}`);
  }
}

/** Reloads the list soon (several pushes in a row cause one request). */
function reloadSites() {
  clearTimeout(listReload);
  listReload = setTimeout(loadSites, 150);
}

function createRow(id) {
  const row = document.createElement('tr');
  row.className = 'site-row';
  row.dataset.siteId = String(id);

  const nameCell = document.createElement('th');
  nameCell.scope = 'row';
  nameCell.dataset.label = 'Name';
  const nameLink = document.createElement('a');
  nameLink.href = `#/sites/${id}`;
  nameLink.className = 'site-name';
  nameCell.append(nameLink);

  const urlCell = document.createElement('td');
  urlCell.dataset.label = 'URL';
  const statusCell = document.createElement('td');
  statusCell.dataset.label = 'Status';
  const deployerCell = document.createElement('td');
  deployerCell.dataset.label = 'Deployer';
  const dateCell = document.createElement('td');
  dateCell.dataset.label = 'Last deploy';

  const actionsCell = document.createElement('td');
  actionsCell.className = 'row-actions';
  const deployButton = document.createElement('button');
  deployButton.type = 'button';
  deployButton.className = 'button button-primary';
  deployButton.textContent = 'Deploy';
  deployButton.addEventListener('click', () => startDeploy(id));
  const editButton = document.createElement('button');
  editButton.type = 'button';
  editButton.className = 'button';
  editButton.textContent = 'Edit';
  editButton.addEventListener('click', () => openSiteForm({ mode: 'edit', id }));
  const deleteButton = document.createElement('button');
  deleteButton.type = 'button';
  deleteButton.className = 'button button-danger-quiet';
  deleteButton.textContent = 'Delete';
  deleteButton.addEventListener('click', () => confirmDelete(id));
  actionsCell.append(deployButton, editButton, deleteButton);

  row.append(nameCell, urlCell, statusCell, deployerCell, dateCell, actionsCell);

  const progressRow = document.createElement('tr');
  progressRow.className = 'progress-row';
  progressRow.hidden = true;
  const progressCell = document.createElement('td');
  progressCell.colSpan = 6;
  const panel = createDeployPanel(id);
  progressCell.append(panel.root);
  progressRow.append(progressCell);

  const r = { row, nameLink, urlCell, statusCell, deployerCell, dateCell, deployButton, editButton, deleteButton, progressRow, panel };
  rows.set(id, r);
  return r;
}

function updateRow(r, site) {
  r.nameLink.textContent = site.name;
  r.urlCell.replaceChildren(urlElement(site.url));
  r.statusCell.replaceChildren(statusBadge(site));
  r.deployerCell.replaceChildren(deployerElement(site));
  r.dateCell.replaceChildren(dateElement(site.last_deploy_date, 'Never'));
  const busy = site.deploy_status === 'deploying' || deploys.get(site.id)?.state === 'starting';
  r.deployButton.disabled = busy;
  r.deployButton.textContent = busy ? 'Deploying…' : 'Deploy';
  r.deployButton.setAttribute('aria-label', `${busy ? 'Deploying' : 'Deploy'} ${site.name}`);
  r.editButton.setAttribute('aria-label', `Edit ${site.name}`);
  r.deleteButton.setAttribute('aria-label', `Delete ${site.name}`);
  const entry = deploys.get(site.id);
  r.progressRow.hidden = !entry;
  if (entry) r.panel.update(site, entry);
}

function renderSites() {
  const list = [...sites.values()].sort((a, b) => a.id - b.id);
  $('sites-loading').hidden = sitesLoaded;
  $('sites-empty').hidden = !sitesLoaded || list.length > 0;
  $('sites-table').hidden = list.length === 0;
  const body = $('sites-body');
  for (const [id, r] of rows) {
    if (!sites.has(id)) {
      r.row.remove();
      r.progressRow.remove();
      rows.delete(id);
    }
  }
  let previous = null;
  for (const site of list) {
    const r = rows.get(site.id) || createRow(site.id);
    updateRow(r, site);
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (r.row !== wanted) body.insertBefore(r.row, wanted);
    if (r.row.nextSibling !== r.progressRow) body.insertBefore(r.progressRow, r.row.nextSibling);
    previous = r.progressRow;
  }
}

// ------------------------------------------------------------------------------ deploy progress

/** A progress bar, a percentage and a step log for the deploys of one site. */
function createDeployPanel(id) {
  const root = document.createElement('div');
  root.className = 'deploy-panel';
  const head = document.createElement('div');
  head.className = 'deploy-head';
  const title = document.createElement('p');
  title.className = 'deploy-title';
  title.id = `deploy-title-${id}-${Math.random().toString(36).slice(2, 8)}`;
  const dismiss = document.createElement('button');
  dismiss.type = 'button';
  dismiss.className = 'button button-small';
  dismiss.textContent = 'Hide log';
  dismiss.addEventListener('click', () => {
    deploys.delete(id);
    renderSites();
    renderDetail();
  });
  head.append(title, dismiss);
  const bar = document.createElement('progress');
  bar.max = 100;
  bar.value = 0;
  bar.className = 'deploy-bar';
  bar.setAttribute('aria-labelledby', title.id);
  // A live log region around an ordered list: each new step is read out once.
  const logRegion = document.createElement('div');
  logRegion.setAttribute('role', 'log');
  logRegion.setAttribute('aria-label', 'Deploy steps');
  const log = document.createElement('ol');
  log.className = 'deploy-steps';
  logRegion.append(log);
  root.append(head, bar, logRegion);

  return {
    root,
    update(site, entry) {
      root.dataset.state = entry.state;
      let text;
      if (entry.state === 'ok') text = `✓ Deploy of ${quoted(site.name)} finished: deployed`;
      else if (entry.state === 'failed') text = `✕ Deploy of ${quoted(site.name)} failed`;
      else text = `↻ Deploying ${quoted(site.name)} — ${entry.percent}%`;
      title.textContent = text;
      bar.value = entry.percent;
      bar.textContent = `${entry.percent}%`;
      dismiss.hidden = entry.state === 'running' || entry.state === 'starting';
      dismiss.setAttribute('aria-label', `Hide the deploy log of ${site.name}`);
      // The log only grows, so that a screen reader announces each new step once.
      while (log.children.length > entry.steps.length) log.lastChild.remove();
      for (let i = 0; i < entry.steps.length; i++) {
        const step = entry.steps[i];
        let item = log.children[i];
        if (!item) {
          item = document.createElement('li');
          log.append(item);
        }
        const label = `${step.icon} ${step.text}`;
        if (item.textContent !== label) item.textContent = label;
        item.className = `step step-${step.tone}`;
      }
    },
  };
}

function stepEntry(text, tone, icon) {
  return { text, tone, icon };
}

async function startDeploy(id) {
  const site = sites.get(id) || (detail && detail.id === id ? detail.site : null);
  if (!site || !session) return;
  const previous = deploys.get(id);
  if (previous && (previous.state === 'starting' || previous.state === 'running')) return;
  const entry = { percent: 0, steps: [stepEntry('Deploy requested', 'info', '•')], state: 'starting', message: '', request: '' };
  deploys.set(id, entry);
  hide($('sites-error'));
  hide($('site-action-error'));
  renderSites();
  renderDetail();
  try {
    const data = await call('POST', `/api/sites/${id}/deploy`);
    if (deploys.get(id) !== entry) return;
    entry.request = typeof data.request === 'string' ? data.request : '';
    if (entry.state === 'starting') entry.state = 'running';
    const current = sites.get(id);
    if (current && entry.state === 'running') current.deploy_status = 'deploying';
    if (detail && detail.id === id && detail.site && entry.state === 'running') detail.site.deploy_status = 'deploying';
    announce(`Deploy of ${site.name} started.`);
  } catch (err) {
    if (err instanceof SessionEnded) return;
    if (deploys.get(id) === entry) deploys.delete(id);
    const text = `${quoted(site.name)} was not deployed. ${describeError(err, 'deploy')}`;
    if (detail && detail.id === id) show($('site-action-error'), text);
    else show($('sites-error'), text);
  }
  renderSites();
  renderDetail();
}

function finishDeploy(id, ok, code, message) {
  let entry = deploys.get(id);
  if (!entry) {
    entry = { percent: 0, steps: [], state: 'running', message: '', request: '' };
    deploys.set(id, entry);
  }
  if (entry.state === 'ok' || entry.state === 'failed') return;
  if (ok) {
    entry.state = 'ok';
    entry.percent = 100;
    entry.steps.push(stepEntry('Deployed', 'ok', '✓'));
  } else {
    entry.state = 'failed';
    entry.message = describeCode(code, message);
    entry.steps.push(stepEntry(`Failed: ${entry.message}`, 'bad', '✕'));
  }
}

// ---------------------------------------------------------------------------------- live updates

/**
 * The newer of two copies of a site. A REST answer and a pushed update can arrive in either order
 * (the agent may answer a create before the browser has read the POST's response): the server counts
 * every change in `revision`, so an older copy never overwrites a newer one.
 */
function newer(incoming, known) {
  if (!known) return incoming;
  const a = Number.isSafeInteger(incoming.revision) ? incoming.revision : 0;
  const b = Number.isSafeInteger(known.revision) ? known.revision : 0;
  return a >= b ? incoming : known;
}

function upsertSite(site) {
  if (!isOwnSite(site)) return;
  const kept = newer(site, sites.get(site.id) || (detail && detail.id === site.id ? detail.site : null));
  sites.set(site.id, kept);
  if (detail && detail.id === site.id) detail.site = kept;
}

function handlePush(message) {
  if (!session) return;
  const id = Number.isSafeInteger(message.site) ? message.site : 0;
  if (message.type === 'progress') {
    if (!id || message.op !== 'site.deploy') return;
    if (!sites.has(id) && !(detail && detail.site && detail.id === id)) {
      reloadSites();
      return;
    }
    let entry = deploys.get(id);
    const finished = entry && (entry.state === 'ok' || entry.state === 'failed');
    if (finished && entry.request && entry.request === message.id) return;  // late news of a deploy that ended
    if (!entry || finished) {
      entry = { percent: 0, steps: [], state: 'running', message: '', request: message.id || '' };
      deploys.set(id, entry);
    }
    if (entry.state === 'starting') entry.state = 'running';
    if (!entry.request && typeof message.id === 'string') entry.request = message.id;
    if (typeof message.percent === 'number') entry.percent = Math.max(entry.percent, Math.min(100, message.percent));
    if (message.step) entry.steps.push(stepEntry(`${message.step} (${entry.percent}%)`, 'info', '•'));
    const site = sites.get(id);
    if (site) site.deploy_status = 'deploying';
    if (detail && detail.id === id && detail.site) detail.site.deploy_status = 'deploying';
  } else if (message.type === 'result' || message.type === 'error') {
    if (!id) {
      // An answer to the socket's own messages (auth, reauth): nothing the page can act on but say it.
      if (message.type === 'error') show($('sites-error'), `Live updates had a problem. ${describeCode(message.code, message.message)}`);
      return;
    }
    const known = sites.has(id) || (detail && detail.site && detail.id === id);
    const payload = message.payload;
    if (payload && typeof payload === 'object' && payload.id === id) upsertSite(payload);
    else if (!known && (message.op === 'site.create' || message.op === 'site.deploy')) reloadSites();  // a site this page has not seen yet
    if (!known && !sites.has(id)) return;  // e.g. the hosting server's answer about a site deleted here
    const ok = message.type === 'result' && message.status === 'ok';
    const site = sites.get(id) || (detail && detail.id === id ? detail.site : null);
    const name = site ? site.name : `site ${id}`;
    if (message.op === 'site.deploy') {
      const entry = deploys.get(id);
      // The result of an older deploy than the one shown (its row was refreshed above) changes no log.
      const older = entry && entry.request && typeof message.id === 'string' && entry.request !== message.id &&
        (entry.state === 'ok' || entry.state === 'failed');
      if (!older) {
        finishDeploy(id, ok, message.code, message.message);
        const shown = deploys.get(id);
        if (!shown.request && typeof message.id === 'string') shown.request = message.id;
        if (site && !ok && !(payload && payload.id === id)) site.deploy_status = 'failed';
        announce(ok ? `${name} is deployed.` : `Deploy of ${name} failed. ${shown.message}`);
      }
    } else if (message.op === 'site.create') {
      if (site && !(payload && payload.id === id)) site.deploy_status = ok ? 'created' : 'failed';
      if (ok) announce(`${name} is ready.`);
      else show($('sites-error'), `${quoted(name)} could not be set up on its hosting server. ${describeCode(message.code, message.message)}`);
    } else if (!ok && (message.op === 'site.update' || message.op === 'site.delete')) {
      const what = message.op === 'site.update' ? 'apply the change to' : 'remove the files of';
      show($('sites-error'), `The hosting server could not ${what} ${quoted(name)}. ${describeCode(message.code, message.message)}`);
    }
  } else {
    return;
  }
  renderSites();
  renderDetail();
}

// ------------------------------------------------------------------------------------- site form

function openSiteForm(mode) {
  const form = $('site-form');
  formMode = mode;
  hide($('site-form-error'));
  clearFieldError('site-name');
  clearFieldError('site-url');
  if (mode.mode === 'edit') {
    const site = sites.get(mode.id);
    if (!site) return;
    $('site-form-title').textContent = `Edit ${quoted(site.name)}`;
    $('site-form-submit').textContent = 'Save changes';
    $('site-name').value = site.name;
    $('site-url').value = site.url;
  } else {
    $('site-form-title').textContent = 'New site';
    $('site-form-submit').textContent = 'Create site';
    form.reset();
  }
  form.hidden = false;
  $('new-site').setAttribute('aria-expanded', 'true');
  $('site-name').focus();
}

function closeSiteForm() {
  formMode = null;
  const form = $('site-form');
  form.hidden = true;
  form.reset();
  $('new-site').setAttribute('aria-expanded', 'false');
}

function setFieldError(id, text) {
  const input = $(id);
  input.setAttribute('aria-invalid', 'true');
  show($(`${id}-error`), text);
}

function clearFieldError(id) {
  $(id).removeAttribute('aria-invalid');
  hide($(`${id}-error`));
}

/** The page's check of the site form, as the server checks it: each problem next to its field. */
function validateSite(name, url) {
  clearFieldError('site-name');
  clearFieldError('site-url');
  const problems = siteFieldProblems(name, url);
  if (problems.name) setFieldError('site-name', problems.name);
  if (problems.url) setFieldError('site-url', problems.url);
  return !problems.name && !problems.url;
}

async function onSiteFormSubmit(event) {
  event.preventDefault();
  if (!formMode || !session) return;
  const mode = formMode;
  const name = $('site-name').value.trim();
  const url = $('site-url').value.trim();
  hide($('site-form-error'));
  if (!validateSite(name, url)) {
    (($('site-name').getAttribute('aria-invalid') === 'true') ? $('site-name') : $('site-url')).focus();
    return;
  }
  const submit = $('site-form-submit');
  submit.disabled = true;
  try {
    if (mode.mode === 'edit') {
      const site = sites.get(mode.id);
      if (!site) {
        closeSiteForm();
        return;
      }
      const changes = {};
      if (name !== site.name) changes.name = name;
      if (url !== site.url) changes.url = url;
      if (Object.keys(changes).length > 0) {
        const data = await call('PUT', `/api/sites/${mode.id}`, changes);
        upsertSite(data.site);
        announce(`Changes to ${data.site.name} saved.`);
      }
    } else {
      const data = await call('POST', '/api/sites', { name, url });
      upsertSite(data.site);
      announce(`Site ${data.site.name} created.`);
    }
    closeSiteForm();
    hide($('sites-error'));
    renderSites();
    $('sites-title').focus();
  } catch (err) {
    if (err instanceof SessionEnded) return;
    const doing = mode.mode === 'edit' ? 'The changes were not saved.' : 'The site was not created.';
    const problem = err instanceof ApiError && err.status === 400 ? serverFieldProblem(err.field) : '';
    if (problem) {  // the server named the field: say it there too
      const id = err.field === 'name' ? 'site-name' : 'site-url';
      setFieldError(id, problem);
      $(id).focus();
    }
    show($('site-form-error'), `${doing} ${describeError(err, 'site-form')}`);
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------- delete

function confirmDelete(id) {
  const site = sites.get(id);
  if (!site) return;
  const dialog = $('delete-dialog');
  $('delete-text').textContent = `${quoted(site.name)} and its files on the hosting server will be removed. This cannot be undone.`;
  dialog.returnValue = '';
  dialog.dataset.siteId = String(id);
  dialog.showModal();
}

async function onDeleteDialogClose() {
  const dialog = $('delete-dialog');
  const id = Number(dialog.dataset.siteId);
  delete dialog.dataset.siteId;
  if (dialog.returnValue !== 'delete' || !sites.has(id)) return;
  const site = sites.get(id);
  try {
    await call('DELETE', `/api/sites/${id}`);
    sites.delete(id);
    deploys.delete(id);
    if (formMode && formMode.id === id) closeSiteForm();
    hide($('sites-error'));
    renderSites();
    announce(`Site ${site.name} deleted.`);
    $('sites-title').focus();
  } catch (err) {
    if (err instanceof SessionEnded) return;
    show($('sites-error'), `${quoted(site.name)} was not deleted. ${describeError(err, 'delete')}`);
  }
}

// ------------------------------------------------------------------------------------ one site

async function openSite(id) {
  const panel = detail && detail.id === id ? detail.panel : createDeployPanel(id);
  detail = { id, site: null, error: '', panel, loading: true };
  document.title = 'Site — Citrus';
  $('site-title').textContent = 'Site';
  renderDetail();
  $('site-title').focus();
  const mine = detail;
  try {
    const data = await call('GET', `/api/sites/${id}`);
    if (detail !== mine) return;
    if (!isOwnSite(data.site) || data.site.id !== id) throw new ApiError(403, 'Unauthorized access');
    mine.site = newer(data.site, sites.get(id));
    if (sites.has(id)) sites.set(id, mine.site);
  } catch (err) {
    if (err instanceof SessionEnded || detail !== mine) return;
    mine.error = describeError(err, 'site');
  }
  mine.loading = false;
  renderDetail();
}

function renderDetail() {
  if (!detail) return;
  const { site, error, panel, loading } = detail;
  $('site-loading').hidden = !loading;
  const refusal = $('site-refusal');
  if (error) {
    $('site-refusal-text').textContent = error;
    refusal.hidden = false;
    $('site-title').textContent = 'Site not available';
    document.title = 'Site not available — Citrus';
  } else {
    refusal.hidden = true;
    $('site-refusal-text').textContent = '';
  }
  const details = $('site-details');
  details.hidden = !site;
  if (!site) return;
  $('site-title').textContent = site.name;
  document.title = `${site.name} — Citrus`;
  $('detail-name').textContent = site.name;
  $('detail-url').replaceChildren(urlElement(site.url));
  $('detail-status').replaceChildren(statusBadge(site));
  $('detail-deployer').replaceChildren(deployerElement(site));
  $('detail-last-deploy').replaceChildren(dateElement(site.last_deploy_date, 'Never'));
  $('detail-created').replaceChildren(dateElement(site.created_at, 'Unknown'));
  const entry = deploys.get(site.id);
  const busy = site.deploy_status === 'deploying' || entry?.state === 'starting';
  const button = $('detail-deploy');
  button.disabled = busy;
  button.textContent = busy ? 'Deploying…' : 'Deploy';
  const holder = $('detail-progress');
  if (entry) {
    panel.update(site, entry);
    if (panel.root.parentNode !== holder) holder.replaceChildren(panel.root);
  } else {
    holder.replaceChildren();
  }
}

// ------------------------------------------------------------------------------------------ start

function init() {
  admin = createAdmin({
    call,
    describeError,
    announce,
    currentUser: () => (session ? session.user : null),
    sessionEnded: (err) => err instanceof SessionEnded,
  });
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('new-site').addEventListener('click', () => openSiteForm({ mode: 'create' }));
  $('new-site').setAttribute('aria-expanded', 'false');
  $('site-form').addEventListener('submit', onSiteFormSubmit);
  $('site-form-cancel').addEventListener('click', () => {
    closeSiteForm();
    $('new-site').focus();
  });
  $('site-form').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      closeSiteForm();
      $('new-site').focus();
    }
  });
  $('delete-dialog').addEventListener('close', onDeleteDialogClose);
  $('detail-deploy').addEventListener('click', () => {
    if (detail && detail.site) startDeploy(detail.id);
  });
  window.addEventListener('hashchange', route);
  showLogin('');
}

init();
