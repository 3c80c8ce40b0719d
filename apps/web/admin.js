// The administration console (#/admin): agents with their presence, commanders, hubs, users, the
// security events to review and the audit trail. Shown to administrators only, but every route it
// calls is refused by the backend to anyone else: hiding it is for people, not for security.
//
// A new key is shown once, in a panel with a copy button, and dropped from the page when the
// administrator closes the panel or leaves the view; lists never carry keys.
// Everything is built with DOM calls and textContent, never by parsing HTML.

const $ = (id) => document.getElementById(id);

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function timeCell(unixSeconds, none = '—') {
  const cell = document.createElement('td');
  if (typeof unixSeconds !== 'number' || !(unixSeconds > 0)) {
    cell.textContent = none;
    cell.className = 'muted';
    return cell;
  }
  const date = new Date(unixSeconds * 1000);
  const time = document.createElement('time');
  time.dateTime = date.toISOString();
  time.textContent = dateFormat.format(date);
  cell.append(time);
  return cell;
}

function textCell(text, header = false) {
  const cell = document.createElement(header ? 'th' : 'td');
  if (header) cell.scope = 'row';
  cell.textContent = String(text ?? '');
  return cell;
}

function button(text, label, onClick, tone = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = `button button-small${tone ? ` ${tone}` : ''}`;
  b.textContent = text;
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

function listOf(text) {
  return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function badge(ok, yes, no) {
  const span = document.createElement('span');
  span.className = `status ${ok ? 'status-ok' : 'status-idle'}`;
  const icon = document.createElement('span');
  icon.className = 'status-icon';
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = ok ? '●' : '○';
  const text = document.createElement('span');
  text.textContent = ok ? yes : no;
  span.append(icon, text);
  return span;
}

/** datetime-local value -> Unix seconds, or null when empty. */
function unixOf(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

const KINDS = [
  { kind: 'agent', path: 'agents', id: 'agentId', grants: 'trustedCommanders', noun: 'agent' },
  { kind: 'commander', path: 'commanders', id: 'commanderId', grants: 'agents', noun: 'commander' },
  { kind: 'hub', path: 'hubs', id: 'hubId', grants: null, noun: 'hub' },
];

/**
 * deps: call(method, path, body) (the session's authenticated request; it ends the session on a
 * 401), describeError(err, context), announce(text), currentUser() -> {id, name, role},
 * sessionEnded(err) -> whether err only says the session ended meanwhile.
 */
export function createAdmin(deps) {
  const { call, describeError, announce, currentUser } = deps;
  let resetTarget = null;
  let confirmAction = null;
  let generation = 0;  // a view left (or a session ended) while a request ran: its answer is dropped

  function say(text) {
    const el = $('admin-error');
    el.textContent = text;
    el.hidden = false;
  }

  function fail(err) {
    if (deps.sessionEnded(err)) return;
    say(describeError(err, 'admin'));
  }

  function clearError() {
    const el = $('admin-error');
    el.hidden = true;
    el.textContent = '';
  }

  async function run(work, done) {
    const mine = generation;
    clearError();
    try {
      const data = await work();
      if (mine !== generation) return;
      if (done) await done(data);
    } catch (err) {
      if (mine === generation) fail(err);
    }
  }

  // ---------------------------------------------------------------------------- the key, once

  function showKey(what, key) {
    $('admin-key-for').textContent = what;
    $('admin-key-value').textContent = key;
    $('admin-key-copied').textContent = '';
    $('admin-key').hidden = false;
    $('admin-key-copy').focus();
    announce(`New key for ${what} shown once. Copy it now.`);
  }

  function dropKey() {
    $('admin-key').hidden = true;
    $('admin-key-value').textContent = '';
    $('admin-key-for').textContent = '';
    $('admin-key-copied').textContent = '';
  }

  async function copyKey() {
    const key = $('admin-key-value').textContent;
    try {
      await navigator.clipboard.writeText(key);
      $('admin-key-copied').textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard permission: select the key so that it can be copied by hand.
      const range = document.createRange();
      range.selectNodeContents($('admin-key-value'));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      $('admin-key-copied').textContent = 'Select and copy the key above (the clipboard is not available here).';
    }
  }

  // ----------------------------------------------------------------------------- confirmation

  function confirm(title, text, action, onConfirm) {
    $('admin-dialog-title').textContent = title;
    $('admin-dialog-text').textContent = text;
    $('admin-dialog-confirm').textContent = action;
    confirmAction = onConfirm;
    const dialog = $('admin-dialog');
    dialog.returnValue = '';  // Escape keeps the last value: it must not confirm this one
    dialog.showModal();
  }

  function onDialogClose() {
    const dialog = $('admin-dialog');
    const action = confirmAction;
    confirmAction = null;
    if (dialog.returnValue === 'confirm' && action) action();
  }

  // ------------------------------------------------------------------------------- principals

  function principalRow(k, p) {
    const id = p[k.id];
    const row = document.createElement('tr');
    row.dataset.id = id;
    row.append(textCell(id, true));
    if (k.kind === 'agent') {
      const presence = p.presence;
      const cell = document.createElement('td');
      cell.append(badge(Boolean(presence && presence.online), 'Online', presence ? 'Offline' : 'Not seen'));
      if (presence && presence.hub) {
        const hub = document.createElement('span');
        hub.className = 'help presence-hub';
        hub.textContent = `on ${presence.hub}`;
        cell.append(hub);
      }
      row.append(cell, timeCell(presence && presence.since), timeCell(presence && presence.last_seen));
    } else {
      row.append(timeCell(p.created_at));
    }
    if (k.grants) {
      const cell = document.createElement('td');
      const input = document.createElement('input');
      input.value = (p.grants || []).join(', ');
      input.setAttribute('aria-label', `${k.kind === 'agent' ? 'Trusted commanders' : 'Agents'} of ${id}`);
      input.className = 'grants-input';
      const save = button('Save', `Save the grants of ${id}`, () =>
        run(() => call('PUT', `/api/admin/${k.path}/${encodeURIComponent(id)}/grants`, { grants: listOf(input.value) }),
          () => announce(`Grants of ${id} saved.`)));
      cell.append(input, save);
      row.append(cell);
    }
    const actions = document.createElement('td');
    actions.className = 'row-actions';
    actions.append(
      button('Rotate key', `Rotate the key of ${id}`, () =>
        run(() => call('POST', `/api/admin/${k.path}/${encodeURIComponent(id)}/rotate`),
          (data) => showKey(`${k.noun} ${id}`, data.key))),
      button('Revoke', `Revoke ${id}`, () =>
        confirm(`Revoke ${k.noun} ${id}?`, `Its keys stop working at once and it is removed. This cannot be undone.`,
          'Revoke', () => run(() => call('DELETE', `/api/admin/${k.path}/${encodeURIComponent(id)}`), async () => {
            announce(`${k.noun} ${id} revoked.`);
            await loadPrincipals(k);
          })), 'button-danger-quiet'),
    );
    row.append(actions);
    return row;
  }

  async function loadPrincipals(k) {
    const mine = generation;
    const data = await call('GET', `/api/admin/${k.path}`);
    if (mine !== generation) return;
    $(`${k.path}-body`).replaceChildren(...(data[k.path] || []).map((p) => principalRow(k, p)));
  }

  function onRegister(k, form, idInput, grantsInput) {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const id = idInput.value.trim();
      if (!id) {
        say(`Enter the ${k.noun} id.`);
        idInput.focus();
        return;
      }
      const body = { [k.id]: id };
      if (k.grants) body[k.grants] = listOf(grantsInput.value);
      run(() => call('POST', `/api/admin/${k.path}`, body), async (data) => {
        form.reset();
        showKey(`${k.noun} ${id}`, data.key);
        await loadPrincipals(k);
      });
    });
  }

  // ------------------------------------------------------------------------------------ users

  function userRow(u) {
    const me = currentUser();
    const row = document.createElement('tr');
    row.dataset.name = u.name;
    const status = document.createElement('td');
    status.append(badge(!u.disabled, 'Active', 'Disabled'));
    row.append(textCell(u.name, true), textCell(u.role === 'admin' ? 'Administrator' : 'User'), status);
    const actions = document.createElement('td');
    actions.className = 'row-actions';
    const self = me && me.id === u.id;
    if (!self) {
      actions.append(
        button(u.disabled ? 'Enable' : 'Disable', `${u.disabled ? 'Enable' : 'Disable'} ${u.name}`, () =>
          run(() => call('POST', `/api/admin/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`), async () => {
            announce(`${u.name} ${u.disabled ? 'enabled' : 'disabled'}.`);
            await loadUsers();
          })),
      );
    }
    actions.append(button('Reset password', `Reset the password of ${u.name}`, () => {
      resetTarget = u;
      $('password-for').textContent = u.name;
      $('password-form').hidden = false;
      $('reset-password').focus();
    }));
    if (!self) {
      actions.append(button('Delete', `Delete ${u.name}`, () =>
        confirm(`Delete ${u.name}?`, 'The user and their sites are deleted, and their open sessions end at once.', 'Delete user',
          () => run(() => call('DELETE', `/api/admin/users/${u.id}`), async () => {
            announce(`${u.name} deleted.`);
            await loadUsers();
          })), 'button-danger-quiet'));
    }
    row.append(actions);
    return row;
  }

  async function loadUsers() {
    const mine = generation;
    const data = await call('GET', '/api/admin/users');
    if (mine !== generation) return;
    $('users-body').replaceChildren(...(data.users || []).map(userRow));
  }

  function onAddUser(event) {
    event.preventDefault();
    const username = $('new-user-name').value.trim();
    const password = $('new-user-password').value;
    if (!username || !password) {
      say('Enter a username and a password for the new user.');
      (username ? $('new-user-password') : $('new-user-name')).focus();
      return;
    }
    const role = $('new-user-admin').checked ? 'admin' : 'user';
    run(() => call('POST', '/api/admin/users', { username, password, role }), async () => {
      $('user-form').reset();
      announce(`${username} added.`);
      await loadUsers();
    });
  }

  function closePasswordForm() {
    resetTarget = null;
    $('password-form').hidden = true;
    $('reset-password').value = '';
    $('password-for').textContent = '';
  }

  function onResetPassword(event) {
    event.preventDefault();
    const target = resetTarget;
    const password = $('reset-password').value;
    if (!target || !password) {
      say('Enter the new password.');
      return;
    }
    run(() => call('POST', `/api/admin/users/${target.id}/password`, { password }), () => {
      closePasswordForm();
      announce(`Password of ${target.name} changed.`);
    });
  }

  // ------------------------------------------------------------------------------------ audit

  function eventCells(e, withTarget) {
    const cells = [timeCell(e.at), textCell(e.kind), textCell(e.actor), textCell(e.action)];
    if (withTarget) cells.push(textCell(e.target));
    cells.push(textCell(e.outcome));
    return cells;
  }

  async function loadFlagged() {
    const mine = generation;
    const data = await call('GET', '/api/admin/audit/flagged?limit=50');
    if (mine !== generation) return;
    const open = Number(data.unacknowledged) || 0;
    $('flagged-summary').textContent = open === 1 ? '1 event waits for review.' : `${open} events wait for review.`;
    $('flagged-body').replaceChildren(...(data.events || []).map((e) => {
      const row = document.createElement('tr');
      row.dataset.id = String(e.id);
      row.append(...eventCells(e, false));
      const cell = document.createElement('td');
      if (e.acknowledged_by) {
        cell.textContent = `By ${e.acknowledged_by}`;
      } else {
        cell.append(button('Acknowledge', `Acknowledge event ${e.id}: ${e.action} by ${e.actor}`, () =>
          run(() => call('POST', `/api/admin/audit/${e.id}/ack`), async () => {
            announce(`Event ${e.id} acknowledged.`);
            await loadFlagged();
          })));
      }
      row.append(cell);
      return row;
    }));
  }

  async function loadAudit() {
    const mine = generation;
    const query = new URLSearchParams({ limit: '100' });
    const actor = $('audit-actor').value.trim();
    const kind = $('audit-kind').value;
    const outcome = $('audit-outcome').value.trim();
    const since = unixOf($('audit-since').value);
    const until = unixOf($('audit-until').value);
    if (actor) query.set('actor', actor);
    if (kind) query.set('kind', kind);
    if (outcome) query.set('outcome', outcome);
    if (since !== null) query.set('since', String(since));
    if (until !== null) query.set('until', String(until));
    const data = await call('GET', `/api/admin/audit?${query}`);
    if (mine !== generation) return;
    const events = data.events || [];
    if (events.length === 0) {
      const row = document.createElement('tr');
      const cell = textCell('No events match.');
      cell.colSpan = 7;
      cell.className = 'muted';
      row.append(cell);
      $('audit-body').replaceChildren(row);
      return;
    }
    $('audit-body').replaceChildren(...events.map((e) => {
      const row = document.createElement('tr');
      row.append(...eventCells(e, true), textCell(e.detail));
      return row;
    }));
  }

  // ------------------------------------------------------------------------------------- view

  async function show() {
    generation += 1;
    clearError();
    await run(() => Promise.all([...KINDS.map(loadPrincipals), loadUsers(), loadFlagged(), loadAudit()]));
  }

  /** Leaves the view: drops a key still shown, and everything listed. */
  function clear() {
    generation += 1;
    dropKey();
    closePasswordForm();
    clearError();
    for (const id of ['agents-body', 'commanders-body', 'hubs-body', 'users-body', 'flagged-body', 'audit-body'])
      $(id).replaceChildren();
    $('flagged-summary').textContent = '';
    for (const id of ['agent-form', 'commander-form', 'hub-form', 'user-form', 'audit-filter']) $(id).reset();
    const dialog = $('admin-dialog');
    if (dialog.open) dialog.close('cancel');
  }

  onRegister(KINDS[0], $('agent-form'), $('agent-id'), $('agent-trust'));
  onRegister(KINDS[1], $('commander-form'), $('commander-id'), $('commander-agents'));
  onRegister(KINDS[2], $('hub-form'), $('hub-id'), null);
  $('user-form').addEventListener('submit', onAddUser);
  $('password-form').addEventListener('submit', onResetPassword);
  $('password-cancel').addEventListener('click', closePasswordForm);
  $('audit-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    run(loadAudit);
  });
  $('admin-key-copy').addEventListener('click', copyKey);
  $('admin-key-done').addEventListener('click', dropKey);
  $('admin-dialog').addEventListener('close', onDialogClose);

  return { show, clear };
}
