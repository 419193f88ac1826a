// The bothy web console: a client of the public /v1 API, nothing more.
//
// Auth: on a unix socket (reached through a local proxy) there is none; on TCP the daemon wants
// a bearer token. The console asks for it once, keeps it in sessionStorage (this tab only, gone
// when the tab closes; never in a cookie, so no other site can make the browser use it), sends
// it as `Authorization: Bearer` on fetches, and as a WebSocket subprotocol
// (`bothy.token.<token>`, beside `bothy`) on terminal attaches, since browsers cannot set
// headers on WebSockets. The daemon checks and strips it before anything reaches a sandbox.
'use strict';

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return e;
};

const TOKEN_KEY = 'bothy.token';
const state = { sandboxes: [], selected: null, tab: 'terminal', filesPath: '/workspace', conn: null };

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function api(method, path, { json, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) showLogin(sessionStorage.getItem(TOKEN_KEY) ? 'The token was refused.' : '');
  if (!resp.ok) {
    let code = 'http_' + resp.status, message = resp.statusText;
    try { const e = await resp.json(); code = e.code || code; message = e.message || message; } catch (_) {}
    throw new ApiError(resp.status, code, message);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

const sb = (name, rest = '') => `/v1/sandboxes/${encodeURIComponent(name)}${rest}`;

function toast(msg, isError = false) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = isError ? 'error' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, isError ? 6000 : 2500);
}

async function attempt(fn) {
  try { return await fn(); } catch (e) { toast(e.message || String(e), true); return undefined; }
}

// ---------- login ----------

function showLogin(message = '') {
  $('#login').hidden = false;
  $('#login-error').textContent = message;
  $('#login-token').focus();
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('#login-token').value.trim());
  $('#login-token').value = '';
  try {
    await api('GET', '/v1/sandboxes');
    $('#login').hidden = true;
    $('#logout').hidden = false;
    startPolling();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(e.status === 401 ? 'That token was refused.' : e.message);
  }
});

$('#logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// ---------- sandboxes ----------

async function refreshSandboxes() {
  let list;
  try { list = await api('GET', '/v1/sandboxes'); } catch (e) { if (e.status !== 401) toast(e.message, true); return; }
  state.sandboxes = (list.sandboxes || []).sort((a, b) => a.name.localeCompare(b.name));
  const ul = $('#sandbox-list');
  ul.replaceChildren(...state.sandboxes.map((s) => el('li', {
    class: s.name === state.selected ? 'selected' : '', 'data-name': s.name,
    onclick: () => select(s.name),
  }, el('span', {}, s.name), el('span', { class: `state ${s.state}` }, s.state))));
  $('#sidebar-empty').hidden = state.sandboxes.length > 0;
  if (state.selected) renderHeader();
}

function current() { return state.sandboxes.find((s) => s.name === state.selected); }

function renderHeader() {
  const s = current();
  if (!s) { $('#detail').hidden = true; $('#welcome').hidden = false; return; }
  $('#detail-name').textContent = s.name;
  const st = $('#detail-state');
  st.textContent = s.state;
  st.className = `state ${s.state}`;
  $('#detail-meta').textContent = `image ${s.image} · created ${s.created_at.replace('T', ' ').slice(0, 19)}`;
  $('#btn-wake').disabled = s.state === 'running';
  $('#btn-sleep').disabled = s.state !== 'running';
}

function select(name) {
  if (state.selected !== name) {
    closeTerminal();
    state.selected = name;
    state.filesPath = '/workspace';
    $('#files-path').value = state.filesPath;
  }
  $('#welcome').hidden = true;
  $('#detail').hidden = false;
  for (const li of document.querySelectorAll('#sandbox-list li')) li.classList.toggle('selected', li.dataset.name === name);
  renderHeader();
  showTab(state.tab);
}

$('#create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('#new-sandbox-name').value.trim();
  const btn = $('#create-sandbox');
  btn.disabled = true;
  const s = await attempt(() => api('PUT', sb(name), { json: {} }));
  btn.disabled = false;
  if (!s) return;
  $('#new-sandbox-name').value = '';
  await refreshSandboxes();
  state.tab = 'terminal';
  select(name);
});

$('#btn-sleep').addEventListener('click', async () => {
  closeTerminal();
  await attempt(() => api('POST', sb(state.selected, '/sleep')));
  await refreshSandboxes();
  showTab(state.tab);
});
$('#btn-wake').addEventListener('click', async () => {
  await attempt(() => api('POST', sb(state.selected, '/wake')));
  await refreshSandboxes();
  showTab(state.tab);
});
$('#btn-destroy').addEventListener('click', async () => {
  const name = state.selected;
  if (!confirm(`Destroy sandbox ${name} and everything in it?`)) return;
  closeTerminal();
  if ((await attempt(() => api('DELETE', sb(name)))) === undefined) return;
  state.selected = null;
  $('#detail').hidden = true;
  $('#welcome').hidden = false;
  refreshSandboxes();
});

// ---------- tabs ----------

for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === tab);
  for (const p of document.querySelectorAll('.panel')) p.hidden = p.id !== `panel-${tab}`;
  if (tab === 'terminal') loadTerminals();
  if (tab === 'files') loadFiles();
  if (tab === 'processes') loadProcesses();
  if (tab === 'ports') loadPorts();
}

// ---------- terminals ----------

// One attached terminal: speaks the cursor framing and, when the socket drops, reattaches
// from the last cursor it saw, so the screen gets exactly the missed bytes (no repaint).
class TerminalConn {
  constructor(sandbox, id, container) {
    this.sandbox = sandbox; this.id = id; this.cursor = null; this.pending = null;
    this.closed = false; this.exited = false; this.retries = 0;
    this.term = new Terminal({
      cursorBlink: true, fontSize: 13, scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
      theme: { background: '#141820' },
    });
    this.fit = new FitAddon.FitAddon();
    this.term.loadAddon(this.fit);
    container.replaceChildren();
    this.term.open(container);
    this.fit.fit();
    this.encoder = new TextEncoder();
    this.term.onData((d) => this.send(this.encoder.encode(d)));
    this.term.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
    this.term.onResize(({ cols, rows }) => this.sendControl({ type: 'resize', cols, rows }));
    this.resizeObserver = new ResizeObserver(() => { try { this.fit.fit(); } catch (_) {} });
    this.resizeObserver.observe(container);
    this.connect();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = new URLSearchParams({ protocol: 'cursor', cols: this.term.cols, rows: this.term.rows });
    if (this.cursor !== null) q.set('cursor', this.cursor);
    return `${proto}://${location.host}${sb(this.sandbox, `/terminals/${encodeURIComponent(this.id)}/ws`)}?${q}`;
  }

  connect() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const protocols = token ? ['bothy', `bothy.token.${token}`] : [];
    const ws = new WebSocket(this.url(), protocols);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.status('connecting…');
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        this.term.write(new Uint8Array(ev.data));
        if (this.pending !== null) { this.cursor = this.pending; this.pending = null; }
        return;
      }
      let f;
      try { f = JSON.parse(ev.data); } catch (_) { return; }
      if (f.type === 'chunk') this.pending = f.cursor;
      else if (f.type === 'ready') {
        this.cursor = f.cursor; this.retries = 0; this.status('connected');
        this.term.focus();
      } else if (f.type === 'truncated') this.term.write('\r\n\x1b[33m[earlier output was lost]\x1b[0m\r\n');
      else if (f.type === 'exit') {
        this.exited = true;
        const how = f.exit && f.exit.signal ? `signal ${f.exit.signal}` : `code ${f.exit ? f.exit.code : f.code}`;
        this.term.write(`\r\n\x1b[2m[exited with ${how}]\x1b[0m\r\n`);
        this.status(`exited (${how})`);
        loadTerminals(this.id);
      } else if (f.type === 'error') console.warn('terminal:', f.message);
    };
    ws.onclose = () => {
      if (this.closed || this.exited) return;
      const delay = Math.min(1000 * 2 ** this.retries, 15000);
      this.retries += 1;
      this.status(`disconnected, retrying in ${Math.round(delay / 1000)} s`);
      this.timer = setTimeout(() => this.reconnect(), delay);
    };
  }

  // Reattach from the last cursor, unless the sandbox went to sleep or away meanwhile: a
  // terminal request would wake it, and an open tab must not keep sandboxes from sleeping.
  async reconnect() {
    if (this.closed) return;
    let s;
    try { s = await api('GET', sb(this.sandbox)); } catch (e) {
      if (e.status === 404) { this.status('sandbox is gone'); return; }
      this.timer = setTimeout(() => this.reconnect(), 5000);
      return;
    }
    if (s.state !== 'running') { this.status(`sandbox is ${s.state}; the terminal ended with it`); return; }
    this.connect();
  }

  send(bytes) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes); }
  sendControl(msg) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg)); }
  status(s) { $('#terminal-status').textContent = s; }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.resizeObserver.disconnect();
    if (this.ws) this.ws.close();
    this.term.dispose();
  }
}

function closeTerminal(message = 'No terminal open: start one with New terminal.') {
  if (state.conn) { state.conn.close(); state.conn = null; }
  $('#terminal-status').textContent = '';
  $('#terminal').replaceChildren(el('p', { class: 'placeholder' }, message));
}

async function loadTerminals(keep) {
  const s = current();
  if (!s) return;
  const sel = $('#terminal-select');
  $('#new-terminal').disabled = s.state !== 'running';
  $('#kill-terminal').disabled = s.state !== 'running';
  if (s.state !== 'running') {
    closeTerminal(`The sandbox is ${s.state}: wake it to use terminals.`);
    sel.replaceChildren(el('option', {}, `sandbox is ${s.state}`));
    return;
  }
  const list = await attempt(() => api('GET', sb(s.name, '/terminals')));
  if (!list) return;
  const terms = list.terminals || [];
  sel.replaceChildren(...terms.map((t) => el('option', { value: t.id },
    `${t.id} · ${t.command.join(' ')} · ${t.status === 'running' ? 'running' : 'exited ' + (t.exit_code ?? 'sig ' + t.signal)}`)));
  const want = keep || (state.conn && state.conn.id) || (terms.find((t) => t.status === 'running') || {}).id;
  if (want) sel.value = want;
  if (!state.conn && want) openTerminal(s.name, want);
  if (!want) sel.replaceChildren(el('option', { value: '' }, 'no terminals yet'));
}

function openTerminal(sandbox, id) {
  closeTerminal();
  state.conn = new TerminalConn(sandbox, id, $('#terminal'));
}

$('#terminal-select').addEventListener('change', (ev) => {
  if (ev.target.value) openTerminal(state.selected, ev.target.value);
});

$('#new-terminal').addEventListener('click', async () => {
  const name = state.selected;
  const t = await attempt(() => api('POST', sb(name, '/terminals'), { json: { cols: 100, rows: 30 } }));
  if (!t) return;
  openTerminal(name, t.id);
  loadTerminals(t.id);
});

$('#kill-terminal').addEventListener('click', async () => {
  if (!state.conn) return;
  await attempt(() => api('POST', sb(state.selected, `/terminals/${state.conn.id}/kill`), { json: {} }));
});

// ---------- files ----------

function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}

async function loadFiles(path = $('#files-path').value || '/workspace') {
  const s = current();
  if (!s) return;
  const list = await attempt(() => api('GET', sb(s.name, `/files/list?path=${encodeURIComponent(path)}`)));
  if (!list) return;
  state.filesPath = list.path;
  $('#files-path').value = list.path;
  const entries = (list.entries || []).sort((a, b) => (a.type === 'dir') === (b.type === 'dir')
    ? a.name.localeCompare(b.name) : (a.type === 'dir' ? -1 : 1));
  $('#file-list').replaceChildren(...entries.map((f) => {
    const isDir = f.type === 'dir';
    const name = el('a', { href: '#', 'data-path': f.path, onclick: (ev) => {
      ev.preventDefault();
      if (isDir) loadFiles(f.path); else download(f);
    } }, isDir ? `${f.name}/` : f.name);
    const actions = isDir ? '' : el('button', { class: 'link', onclick: () => download(f) }, 'download');
    return el('tr', { 'data-name': f.name }, el('td', {}, name), el('td', {}, isDir ? '' : fmtSize(f.size)),
      el('td', { class: 'muted' }, (f.mtime || '').replace('T', ' ').slice(0, 19)), el('td', {}, actions));
  }));
}

async function download(f) {
  const resp = await attempt(() => api('GET', sb(state.selected, `/files?path=${encodeURIComponent(f.path)}`), { raw: true }));
  if (!resp) return;
  const url = URL.createObjectURL(await resp.blob());
  const a = el('a', { href: url, download: f.name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

$('#files-go').addEventListener('click', () => loadFiles());
$('#files-path').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') loadFiles(); });
$('#files-up').addEventListener('click', () => {
  const p = state.filesPath.replace(/\/[^/]*\/?$/, '') || '/';
  loadFiles(p);
});
$('#file-upload').addEventListener('change', async (ev) => {
  const dir = state.filesPath.replace(/\/$/, '');
  for (const file of ev.target.files) {
    const path = `${dir}/${file.name}`;
    const ok = await attempt(() => api('PUT', sb(state.selected, `/files?path=${encodeURIComponent(path)}`), {
      body: file, headers: { 'Content-Type': 'application/octet-stream' },
    }));
    if (ok !== undefined) toast(`uploaded ${path}`);
  }
  ev.target.value = '';
  loadFiles(state.filesPath);
});
$('#files-mkdir').addEventListener('click', async () => {
  const name = prompt('Folder name');
  if (!name) return;
  await attempt(() => api('POST', sb(state.selected, '/files/mkdir'), { json: { path: `${state.filesPath.replace(/\/$/, '')}/${name}` } }));
  loadFiles(state.filesPath);
});

// ---------- processes ----------

function decodeData(d) {
  if (!d) return '';
  if (typeof d === 'string') return d;
  if (d.encoding === 'base64') {
    try { return new TextDecoder().decode(Uint8Array.from(atob(d.data), (c) => c.charCodeAt(0))); } catch (_) { return ''; }
  }
  return d.data || '';
}

async function loadProcesses() {
  const s = current();
  if (!s) return;
  let list;
  try { list = await api('GET', sb(s.name, '/processes')); } catch (e) {
    const missing = e.status === 404 && e.code !== 'sandbox_not_found';
    $('#processes-unavailable').hidden = !missing;
    $('#processes-unavailable').textContent = missing
      ? 'Processes are not available: this daemon has no processes API.' : e.message;
    $('#panel-processes .split').hidden = missing;
    $('#process-list').replaceChildren();
    return;
  }
  $('#processes-unavailable').hidden = true;
  $('#panel-processes .split').hidden = false;
  const procs = list.processes || [];
  $('#process-list').replaceChildren(...procs.map((p) => el('tr', {
    class: 'clickable', 'data-id': p.id, onclick: (ev) => showLogs(p.id, ev.currentTarget),
  }, el('td', {}, p.id), el('td', {}, p.shell || (p.argv || []).join(' ')),
  el('td', {}, p.status + (p.exit_code != null ? ` (${p.exit_code})` : '')), el('td', {}, p.pid ?? ''))));
  if (!procs.length) {
    $('#process-list').replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No background processes.')));
  }
  if (!$('#process-logs').textContent) $('#process-logs').textContent = 'Select a process to see its logs.';
}

async function showLogs(id, row) {
  for (const r of document.querySelectorAll('#process-list tr')) r.classList.toggle('selected', r === row);
  const logs = await attempt(() => api('GET', sb(state.selected, `/processes/${encodeURIComponent(id)}/logs`)));
  if (!logs) return;
  const out = decodeData(logs.stdout), err = decodeData(logs.stderr);
  $('#process-logs').textContent = out + (err ? `\n--- stderr ---\n${err}` : '');
}

// ---------- ports ----------

async function loadPorts() {
  const s = current();
  if (!s) return;
  let list;
  try { list = await api('GET', sb(s.name, '/ports')); } catch (e) {
    const missing = e.status === 404 && e.code !== 'sandbox_not_found';
    $('#ports-unavailable').hidden = false;
    $('#ports-unavailable').textContent = missing
      ? 'Exposed ports are not available: this daemon has no ports API.' : e.message;
    $('#expose-form').hidden = missing;
    $('#ports-list').replaceChildren();
    return;
  }
  $('#ports-unavailable').hidden = true;
  $('#expose-form').hidden = false;
  const ports = list.ports || [];
  $('#ports-list').replaceChildren(...ports.map((p) => el('li', { 'data-port': p.port },
    el('strong', {}, `:${p.port} `), el('a', { href: p.url, target: '_blank', rel: 'noopener' }, p.url))));
  if (!ports.length) $('#ports-list').replaceChildren(el('li', { class: 'muted' }, 'No exposed ports.'));
}

$('#expose-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const port = Number($('#expose-port').value);
  if ((await attempt(() => api('POST', sb(state.selected, '/ports'), { json: { port } }))) !== undefined) {
    $('#expose-port').value = '';
    loadPorts();
  }
});

// ---------- start ----------

(async function start() {
  try {
    await api('GET', '/v1/sandboxes');
  } catch (e) {
    if (e.status === 401) return; // the login form is showing
    toast(e.message, true);
  }
  $('#logout').hidden = !sessionStorage.getItem(TOKEN_KEY);
  startPolling();
})();

function startPolling() {
  refreshSandboxes();
  if (!startPolling.timer) startPolling.timer = setInterval(refreshSandboxes, 3000);
}
