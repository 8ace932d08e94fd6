// Shared by every page of the console: element building, formatting, the
// API client with its token, the login prompt, confirmations, charts and
// the polling that each page runs.

export const TOKEN_KEY = 'deltaforge.apiToken';
const POLL_MS = 2000;
export const view = document.getElementById('view');
let pollTimer = null;
export let pageGeneration = 0;

// ---------------------------------------------------------------- helpers
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
export const fmtNum = (n, digits) => (n === null || n === undefined || Number.isNaN(n)) ? '–'
  : Number(n).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 1 : digits });
export function fmtBytes(b) {
  if (b === null || b === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0; let v = Number(b);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return fmtNum(v, i === 0 ? 0 : 1) + ' ' + units[i];
}
export function fmtAgo(iso) {
  if (!iso) return 'never';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}
export function fmtDuration(s) {
  if (!Number.isFinite(s)) return '–';
  if (s < 60) return Math.round(s) + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}
function toast(text, isError) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = isError ? 'show error' : 'show';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 6000);
}

// ------------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || ('HTTP ' + status));
    this.status = status;
    this.body = body;
  }
}
export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

export async function api(method, path, body, contentType) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  let payload;
  // Every mutation carries a JSON body with its Content-Type (even when
  // the route reads none), as the API's cross-site protection expects.
  if (body === undefined && method !== 'GET') body = {};
  if (body !== undefined) {
    headers['Content-Type'] = contentType || 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, {
    method, headers, body: payload, mode: 'same-origin', credentials: 'omit', cache: 'no-store',
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (resp.status === 401) {
    showLogin((data && data.error) || 'authentication required');
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
export const enc = encodeURIComponent;

// ----------------------------------------------------------- login/token
export function showLogin(message) {
  stopPolling();
  view.replaceChildren();
  document.getElementById('login').hidden = false;
  document.getElementById('login-message').textContent =
    'The API refused the request: ' + message + '. Enter the API token.';
  document.getElementById('token-input').focus();
}
// ---------------------------------------------------------- confirmation
function confirmAction(text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  ok.textContent = okLabel || 'Confirm';
  return new Promise((resolve) => {
    const done = (value) => {
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      dlg.removeEventListener('cancel', no);
      dlg.close();
      resolve(value);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dlg.addEventListener('cancel', no);
    dlg.showModal();
    cancel.focus();
  });
}

export async function act(label, question, fn) {
  if (question && !(await confirmAction(question, label))) return false;
  try {
    await fn();
    toast(label + ': done');
    return true;
  } catch (e) {
    if (e.status !== 401) toast(label + ' failed: ' + e.message + detailText(e), true);
    return false;
  }
}
export function detailText(e) {
  const d = e.body && e.body.detail;
  if (!d) return '';
  if (typeof d === 'string') return ' (' + d + ')';
  if (d.fix) return ' (' + d.fix + ')';
  return '';
}

// ----------------------------------------------------------------- charts
export function sparkline(el) {
  return new uPlot({
    width: 120, height: 30, class: 'spark', legend: { show: false }, cursor: { show: false },
    scales: { x: { time: false } }, axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: '#2563eb', fill: 'rgba(37,99,235,0.15)', width: 1.5, points: { show: false } }],
  }, [[], []], el);
}
export function chart(el, title, series) {
  const width = Math.max(280, Math.min(el.clientWidth || 600, 900));
  return new uPlot({
    title, width, height: 220,
    axes: [{}, { size: 70 }].concat(series.length > 1 ? [{ side: 1, scale: 'bytes', size: 70, values: (u, v) => v.map(fmtBytes) }] : []),
    scales: { bytes: { auto: true } },
    series: [{}].concat(series),
    // Tells tests (and curious operators) how many points were drawn.
    hooks: { draw: [(u) => { el.dataset.drawnPoints = String(u.data[0].length); }] },
  }, [[]].concat(series.map(() => [])), el);
}

// --------------------------------------------------------------- routing
export function stopPolling() { clearTimeout(pollTimer); pollTimer = null; pageGeneration++; }
export function poll(gen, fn) {
  const tick = async () => {
    if (gen !== pageGeneration) return;
    try { await fn(); } catch (e) { if (e.status !== 401) console.warn(e); }
    if (gen === pageGeneration) pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}
