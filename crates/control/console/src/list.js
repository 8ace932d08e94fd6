// The pipelines page (front page): every pipeline, sortable, polled live.
import { api, enc, fmtAgo, fmtBytes, fmtNum, h, pageGeneration, poll, sparkline, view } from './core.js';

// --------------------------------------------------------- pipelines page
const COLUMNS = [
  ['name', 'Pipeline', (p) => p.name],
  ['state', 'State', (p) => (p.state === 'failed' ? '0' : '1') + p.state],
  ['source', 'Source', (p) => p.source_type + p.source_id],
  ['sinks', 'Sinks', (p) => sinkIds(p).join(',')],
  ['rate', 'Events/s', (p) => p.rate || 0],
  ['lag_seconds', 'Lag (s)', (p) => p.lag_seconds || 0],
  ['lag_bytes', 'Lag (bytes)', (p) => p.lag_bytes || 0],
  ['checkpoint', 'Last checkpoint', (p) => (p.checkpoint ? Date.parse(p.checkpoint.written_at) : 0)],
];
let sortKey = 'name';
let sortDesc = false;
function sinkIds(p) {
  const sinks = (p.spec && p.spec.spec && p.spec.spec.sinks) || [];
  return sinks.map((s) => (s.config && s.config.id) || s.type);
}

export function listPage() {
  const gen = pageGeneration;
  const rows = new Map();
  const status = h('p', { class: 'muted', id: 'list-status' }, 'Loading…');
  const headRow = h('tr');
  const tbody = h('tbody');
  const table = h('table', { id: 'pipelines', class: 'grid' },
    h('caption', { class: 'sr-only' }, 'Pipelines, sortable by each column'), h('thead', {}, headRow), tbody);
  let last = [];
  const renderHead = () => {
    headRow.replaceChildren(...COLUMNS.map(([key, label]) => h('th', {
      scope: 'col', 'aria-sort': key === sortKey ? (sortDesc ? 'descending' : 'ascending') : 'none',
    }, h('button', {
      type: 'button', class: 'sort', 'data-sort': key,
      onclick: () => { if (sortKey === key) sortDesc = !sortDesc; else { sortKey = key; sortDesc = false; } renderHead(); render(last); },
    }, label, key === sortKey ? (sortDesc ? ' ▼' : ' ▲') : ''))));
  };
  const render = (pipelines) => {
    last = pipelines;
    const get = COLUMNS.find((c) => c[0] === sortKey)[2];
    const sorted = pipelines.slice().sort((a, b) => {
      const x = get(a); const y = get(b);
      const r = x < y ? -1 : x > y ? 1 : 0;
      return sortDesc ? -r : r;
    });
    const seen = new Set();
    for (const p of sorted) {
      seen.add(p.name);
      let r = rows.get(p.name);
      if (!r) {
        const spark = h('div', { class: 'spark-box', 'aria-hidden': 'true' });
        r = {
          tr: h('tr', { 'data-pipeline': p.name }),
          cells: COLUMNS.map(() => h('td')),
          spark, plot: null,
        };
        r.tr.append(...r.cells);
        rows.set(p.name, r);
      }
      const c = r.cells;
      r.tr.dataset.state = p.state;
      r.tr.className = p.state === 'failed' ? 'failed' : '';
      c[0].replaceChildren(h('a', { href: '#/pipelines/' + enc(p.name) }, p.name));
      c[1].replaceChildren(stateBadge(p.state));
      if (p.state === 'failed' && p.last_error) c[1].append(h('div', { class: 'error-text' }, p.last_error));
      c[2].textContent = p.source_type + ' (' + p.source_id + ')';
      c[3].textContent = sinkIds(p).join(', ');
      c[4].className = 'num rate';
      c[4].dataset.value = String(p.rate || 0);
      c[4].replaceChildren(h('span', { class: 'rate-value' }, fmtNum(p.rate || 0)), r.spark);
      c[5].className = 'num lag-seconds';
      c[5].textContent = fmtNum(p.lag_seconds, 2);
      c[6].className = 'num';
      c[6].textContent = p.lag_bytes === null ? '–' : fmtBytes(p.lag_bytes);
      c[7].replaceChildren(p.checkpoint
        ? h('time', { datetime: p.checkpoint.written_at, title: p.checkpoint.written_at }, fmtAgo(p.checkpoint.written_at))
        : 'none yet');
      tbody.append(r.tr);
      if (!r.plot) r.plot = sparkline(r.spark);
      const samples = p.samples || [];
      r.plot.setData([samples.map((s, i) => i), samples.map((s) => s.events_per_second)]);
    }
    for (const [name, r] of rows) {
      if (!seen.has(name)) { r.tr.remove(); if (r.plot) r.plot.destroy(); rows.delete(name); }
    }
    status.textContent = pipelines.length + ' pipeline(s), updated ' + new Date().toLocaleTimeString();
    table.hidden = pipelines.length === 0;
  };
  view.replaceChildren(h('h1', {}, 'Pipelines'), status, h('div', { class: 'scroll' }, table));
  renderHead();
  poll(gen, async () => {
    const [list, hist] = await Promise.all([api('GET', '/pipelines'), api('GET', '/history?minutes=10')]);
    if (gen !== pageGeneration) return;
    for (const p of list.pipelines) {
      p.samples = hist.pipelines[p.name] || [];
      const lastSample = p.samples[p.samples.length - 1];
      p.rate = lastSample ? lastSample.events_per_second : 0;
    }
    render(list.pipelines);
  });
}

export function stateBadge(state) {
  return h('span', { class: 'state state-' + state, 'data-state': state }, state);
}
