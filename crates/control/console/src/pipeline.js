// One pipeline's page: charts, sinks, checkpoint, snapshots and backfills,
// dead letters, verify, spec, and the actions on it.
import { act, api, chart, detailText, enc, fmtAgo, fmtBytes, fmtDuration, fmtNum, h, pageGeneration, poll, view } from './core.js';
import { stateBadge } from './list.js';

// ----------------------------------------------------------- pipeline page
const RESET_MEANING = {
  postgres: 'PostgreSQL: the pipeline is stopped, its replication slot is dropped and its checkpoint deleted. ' +
    'The next start creates a new slot at the server\'s current position and, unless snapshot.mode is never, ' +
    'reads the matched tables again with a snapshot. Changes committed before are not re-read from the WAL.',
  mysql: 'MySQL/MariaDB: the pipeline is stopped and its checkpoint replaced by the start of the oldest binlog ' +
    'the server still holds, so the next start re-reads every transaction still on the server.',
  datagen: 'datagen: the pipeline is stopped and its checkpoint deleted; the next start generates again from the ' +
    'first event, so every event is delivered again.',
};

function section(title, id, ...children) {
  return h('section', { class: 'card', id, 'aria-labelledby': id + '-title' }, h('h2', { id: id + '-title' }, title), ...children);
}

export function pipelinePage(name) {
  const gen = pageGeneration;
  const path = '/pipelines/' + enc(name);
  const title = h('h1', {}, name, ' ');
  const badge = h('span');
  title.append(badge);
  const errorLine = h('p', { class: 'error-text', id: 'last-error' });
  const summary = h('dl', { class: 'summary' });
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Pipeline actions' });
  const rateBox = h('div', { class: 'chart', id: 'rate-chart', 'data-points': '0' });
  const lagBox = h('div', { class: 'chart', id: 'lag-chart', 'data-points': '0' });
  const resolution = h('p', { class: 'muted' });
  const sinksBody = h('tbody');
  const checkpointBox = h('div');
  const schemasBody = h('tbody');
  const snapshotBox = h('div', { id: 'snapshot-progress' });
  const backfillForm = h('form', { id: 'backfill-form', class: 'inline-form' });
  const dlqBox = h('div', { id: 'dlq' });
  const verifyBox = h('div', { id: 'verify-result', class: 'verify', 'aria-live': 'polite', hidden: true });
  const specPre = h('pre', { id: 'spec', class: 'code' });
  let current = null;
  let rateChart = null;
  let lagChart = null;
  const rowsSeen = {};

  view.replaceChildren(
    h('p', {}, h('a', { href: '#/' }, '← All pipelines')),
    title, errorLine, summary, actions, verifyBox,
    section('Throughput and lag (last hour)', 'charts', resolution, h('div', { class: 'charts' }, rateBox, lagBox)),
    section('Sinks', 'sinks', h('div', { class: 'scroll' }, h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, ['Sink', 'Type', 'Required', 'Delivered (this run)', 'Retries (errors)', 'Dropped batches', 'Acknowledged position'].map((t) => h('th', { scope: 'col' }, t)))),
      sinksBody))),
    section('Checkpoint (as stored)', 'checkpoint', checkpointBox,
      h('h3', {}, 'Schema versions'),
      h('div', { class: 'scroll' }, h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['Table', 'Versions', 'Latest', 'Fingerprint', 'Registered'].map((t) => h('th', { scope: 'col' }, t)))),
        schemasBody))),
    section('Snapshot and backfill', 'snapshot', snapshotBox, backfillForm),
    section('Dead-letter queue', 'dlq-section', dlqBox),
    section('Spec (secrets redacted)', 'spec-section', h('p', {}, h('a', { href: '#/pipelines/' + enc(name) + '/edit', class: 'button' }, 'Edit spec')), specPre),
  );

  const cmd = (label, question, method, suffix) => h('button', {
    type: 'button', 'data-action': label.toLowerCase().replace(/ /g, '-'),
    onclick: () => act(label, question, () => api(method, path + suffix, method === 'POST' ? {} : undefined)).then(refresh),
  }, label);
  const restart = h('button', {
    type: 'button', 'data-action': 'restart',
    onclick: () => act('Restart', 'Restart ' + name + '? In-flight batches are delivered and checkpointed, then it starts again from its checkpoint.', async () => {
      await api('POST', path + '/stop', {});
      for (let i = 0; i < 60; i++) {
        const v = await api('GET', path);
        if (v.state !== 'stopping') break;
        await new Promise((r) => setTimeout(r, 500));
      }
      await api('POST', path + '/start', {});
    }).then(refresh),
  }, 'Restart');

  // Verification (`deltaforge verify` as an API job): started on
  // confirmation, then its job polled until it is no longer running.
  const renderVerify = (job) => {
    const p = job.progress || {};
    const r = job.report || {};
    const sum = (field) => (r.tables || []).reduce((n, t) => n + (t[field] || 0), 0);
    const keys = (label, list) => (list && list.length
      ? h('li', {}, label + ': ', list.slice(0, 5).map((k) => k.table + ' ' + k.key).join(', ') + (list.length > 5 ? ', …' : '')) : '');
    verifyBox.hidden = false;
    verifyBox.dataset.state = job.state;
    verifyBox.dataset.job = String(job.id);
    verifyBox.className = 'verify verify-' + job.state;
    const head = h('strong', { class: 'verify-state' }, job.state);
    if (job.state === 'running') {
      verifyBox.replaceChildren('Verify #' + job.id + ': ', head, ' · ' + (p.phase || 'starting') +
        (p.table ? ' · ' + p.table + ' (' + p.tables_done + ' of ' + p.tables_total + ' tables done)' : '') +
        ' · ' + fmtNum(p.rows || 0, 0) + ' rows compared');
    } else if (job.state === 'failed') {
      verifyBox.replaceChildren('Verify #' + job.id + ': ', head, ' · ', h('span', { class: 'error-text' }, job.error || 'unknown error'));
    } else {
      verifyBox.replaceChildren('Verify #' + job.id + ' of sink ' + r.sink + ': ', head, ' · ' + fmtNum(r.rows_compared, 0) + ' rows compared' +
        (job.state === 'different' ? ' · ' + sum('missing') + ' missing, ' + sum('extra') + ' extra, ' + sum('differing') + ' differing' : ''),
      h('ul', {}, keys('missing in sink', r.missing), keys('extra in sink', r.extra), keys('differs', r.differing)));
    }
  };
  const followVerify = async (id) => {
    while (gen === pageGeneration) {
      let job;
      try { job = await api('GET', path + '/verify/' + enc(id)); } catch (e) {
        if (e.status !== 401) renderVerify({ id, state: 'failed', error: e.message + detailText(e) });
        return;
      }
      if (gen !== pageGeneration) return;
      renderVerify(job);
      if (job.state !== 'running') return;
      await new Promise((res) => setTimeout(res, 1000));
    }
  };
  const verifyButton = (v) => {
    const sinks = ((v.spec.spec && v.spec.spec.sinks) || []).map((s) => (s.config && s.config.id) || s.type);
    const pick = sinks.length > 1
      ? h('select', { id: 'verify-sink', 'aria-label': 'Sink to verify' }, sinks.map((id) => h('option', { value: id }, id))) : null;
    const button = h('button', {
      type: 'button', 'data-action': 'verify',
      onclick: () => {
        const sink = pick ? pick.value : sinks[0];
        act('Start verify', 'Compare sink ' + sink + ' of ' + name + ' with its source, row by row? It reads the source tables ' +
          '(short consistent reads, no locks, no writes) and everything the sink holds; the pipeline keeps running.', async () => {
          const job = await api('POST', path + '/verify', pick ? { sink } : {});
          renderVerify(job);
          followVerify(job.id);
        });
      },
    }, 'Verify');
    return pick ? [pick, button] : [button];
  };

  let actionsFor = null;
  const renderActions = (v) => {
    // Rebuilt only when the state changes, so a button is never replaced
    // under the pointer between two refreshes.
    if (actionsFor === v.state) return;
    actionsFor = v.state;
    const reset = h('button', {
      type: 'button', 'data-action': 'reset-checkpoint', class: 'danger',
      onclick: () => act('Reset checkpoint', 'Reset the checkpoint of ' + name + '? ' +
        (RESET_MEANING[v.source_type] || 'The pipeline is stopped and its checkpoint deleted; its source decides where the next start reads from.') +
        ' Start it again afterwards.', () => api('DELETE', path + '/checkpoint')).then(refresh),
    }, 'Reset checkpoint');
    actions.replaceChildren(
      v.state === 'paused'
        ? cmd('Resume', 'Resume ' + name + ' from its checkpoint?', 'POST', '/resume')
        : cmd('Pause', 'Pause ' + name + '? In-flight batches are delivered and checkpointed; it keeps its lease and resumes from the checkpoint.', 'POST', '/pause'),
      ['stopped', 'failed', 'finished'].includes(v.state)
        ? cmd('Start', 'Start ' + name + ' from its checkpoint?', 'POST', '/start') : restart,
      ...verifyButton(v),
      reset,
    );
  };

  const renderSummary = (v) => {
    badge.replaceChildren(stateBadge(v.state));
    errorLine.textContent = v.last_error ? 'Last error: ' + v.last_error : '';
    const items = [
      ['Source', v.source_type + ' (' + v.source_id + ')'], ['Tenant', v.tenant],
      ['State since', new Date(v.state_since).toLocaleString()], ['Restarts', v.restarts],
      ['Events read (this run)', fmtNum(v.events_read, 0)], ['Lag', fmtNum(v.lag_seconds, 2) + ' s, ' + fmtBytes(v.lag_bytes)],
    ];
    summary.replaceChildren(...items.flatMap(([k, val]) => [h('dt', {}, k), h('dd', {}, String(val))]));
    const sinks = (v.spec.spec && v.spec.spec.sinks) || [];
    const positions = (v.checkpoint && v.checkpoint.sinks) || {};
    const counts = v.sink_counts || {};
    sinksBody.replaceChildren(...sinks.map((s) => {
      const id = (s.config && s.config.id) || s.type;
      // Counts of the current (or last) run; none before a first run.
      const c = counts[id];
      const count = (field) => h('td', { class: 'num', 'data-count': field, 'data-value': c ? String(c[field]) : '' }, c ? fmtNum(c[field], 0) : '–');
      return h('tr', { 'data-sink': id }, h('td', {}, id), h('td', {}, s.type),
        h('td', {}, s.config && s.config.required === false ? 'no' : 'yes'),
        count('delivered'), count('errors'), count('dropped'),
        h('td', {}, h('code', {}, positions[id] ? JSON.stringify(positions[id]) : 'the pipeline\'s checkpoint')));
    }));
    specPre.textContent = JSON.stringify(v.spec, null, 2);
  };

  // The samples held so far: the first poll fetches the hour, later polls
  // only what is newer than the last one held (`?since=`).
  let held = [];
  const historyPath = () => path + '/history' + (held.length ? '?since=' + held[held.length - 1].t : '');
  const renderHistory = (hist) => {
    resolution.textContent = 'One sample every ' + hist.resolution_seconds + ' s, kept for ' +
      Math.round(hist.window_seconds / 60) + ' minutes in the engine\'s memory.';
    held = held.concat(hist.samples);
    if (held.length) {
      const oldest = held[held.length - 1].t - hist.window_seconds;
      held = held.filter((x) => x.t > oldest);
    }
    const s = held;
    const t = s.map((x) => x.t);
    if (!rateChart) {
      rateChart = chart(rateBox, 'Events/s', [{ label: 'events/s', stroke: '#2563eb', width: 2 }]);
      lagChart = chart(lagBox, 'Checkpoint lag', [
        { label: 'lag (s)', stroke: '#b45309', width: 2 },
        { label: 'lag (bytes)', stroke: '#7c3aed', width: 1.5, scale: 'bytes', value: (u, v) => fmtBytes(v) },
      ]);
    }
    rateChart.setData([t, s.map((x) => x.events_per_second)]);
    lagChart.setData([t, s.map((x) => x.lag_seconds), s.map((x) => x.lag_bytes)]);
    rateBox.dataset.points = String(s.length);
    lagBox.dataset.points = String(s.length);
  };

  const renderCheckpoint = (row, schemas) => {
    const value = row.value === null ? null : (() => { try { return JSON.stringify(JSON.parse(row.value), null, 2); } catch (e) { return row.value; } })();
    checkpointBox.replaceChildren(h('table', { class: 'grid kv' },
      h('thead', {}, h('tr', {}, ['namespace', 'key', 'value'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, h('tr', {}, h('td', {}, row.namespace), h('td', {}, row.key),
        h('td', {}, value === null ? 'no checkpoint stored' : h('pre', { class: 'code', id: 'checkpoint-value' }, value))))));
    schemasBody.replaceChildren(...schemas.tables.map((t) => h('tr', {},
      h('td', {}, t.db + '.' + t.table), h('td', { class: 'num' }, t.versions), h('td', { class: 'num' }, t.latest_version),
      h('td', {}, h('code', {}, String(t.fingerprint).slice(0, 16))), h('td', {}, fmtAgo(t.registered_at)))));
    if (!schemas.tables.length) schemasBody.replaceChildren(h('tr', {}, h('td', { colspan: 5 }, 'No schema recorded yet.')));
  };

  const renderSnapshot = (snap) => {
    const now = Date.now() / 1000;
    const items = snap.tables.map(({ table, progress }) => {
      const total = progress.rows_total_estimate;
      const done = progress.state === 'done';
      const pct = done ? 100 : total ? Math.min(99, Math.floor(100 * progress.rows_done / Math.max(total, 1))) : 0;
      const prev = rowsSeen[table];
      let rate = null;
      if (prev && now > prev.at && progress.rows_done >= prev.rows) rate = (progress.rows_done - prev.rows) / (now - prev.at);
      if (!prev || prev.rows !== progress.rows_done) rowsSeen[table] = { rows: progress.rows_done, at: now };
      else if (prev.rate !== undefined) rate = prev.rate;
      if (rowsSeen[table]) rowsSeen[table].rate = rate;
      const eta = !done && rate && total ? (total - progress.rows_done) / rate : NaN;
      const id = 'progress-' + table.replace(/[^a-zA-Z0-9_-]/g, '_');
      return h('div', { class: 'progress-row', 'data-table': table, 'data-state': progress.state },
        h('label', { for: id }, table, ' (' + progress.kind + (progress.where ? ', where ' + progress.where : '') + ')'),
        h('progress', { id, max: 100, value: pct, 'data-percent': pct }, pct + ' %'),
        h('span', { class: 'progress-text' }, pct + ' % · ' + fmtNum(progress.rows_done, 0) + ' rows' +
          (total ? ' of ~' + fmtNum(total, 0) : '') + (done ? ' · done' : ' · ' + (rate ? fmtNum(rate, 0) + ' rows/s · ETA ' + fmtDuration(eta) : 'starting'))));
    });
    const pending = snap.pending_backfills.map((r) => h('li', {}, 'Backfill #' + r.id + ' queued: ' + r.tables.join(', ') + (r.where ? ' where ' + r.where : '')));
    snapshotBox.replaceChildren(...(items.length ? items : [h('p', { class: 'muted' }, 'No snapshot or backfill recorded.')]),
      pending.length ? h('ul', {}, pending) : '');
  };

  const renderBackfillForm = (v) => {
    if (!['postgres', 'mysql'].includes(v.source_type)) {
      backfillForm.replaceChildren(h('p', { class: 'muted' }, 'A ' + v.source_type + ' source cannot backfill.'));
      return;
    }
    const tables = h('input', { id: 'backfill-tables', name: 'tables', required: true, placeholder: 'public.orders, public.customers' });
    const where = h('input', { id: 'backfill-where', name: 'where', placeholder: 'id > 1000 (optional)' });
    backfillForm.replaceChildren(
      h('h3', {}, 'Start a backfill'),
      h('label', { for: 'backfill-tables' }, 'Tables (schema.table, comma-separated)'), tables,
      h('label', { for: 'backfill-where' }, 'WHERE condition (optional)'), where,
      h('button', { type: 'submit' }, 'Start backfill'));
    backfillForm.onsubmit = (ev) => {
      ev.preventDefault();
      const body = { tables: tables.value.split(',').map((t) => t.trim()).filter(Boolean) };
      if (where.value.trim()) body.where = where.value.trim();
      act('Backfill', 'Read ' + body.tables.join(', ') + (body.where ? ' where ' + body.where : '') +
        ' again while the stream goes on? Every matching row is delivered again to every sink.',
      () => api('POST', path + '/backfill', body)).then(refresh);
    };
  };

  // The dead-letter queue: reloaded on demand (not polled), so that a
  // letter being read does not move under the reader.
  const sinkFilter = h('input', { id: 'dlq-sink', name: 'sink', placeholder: 'sink id' });
  const errorFilter = h('input', { id: 'dlq-error', name: 'error', placeholder: 'text in the error' });
  const dlqList = h('div', { id: 'dlq-list' });
  const loadDlq = async () => {
    const q = new URLSearchParams({ limit: '200' });
    if (sinkFilter.value.trim()) q.set('sink', sinkFilter.value.trim());
    if (errorFilter.value.trim()) q.set('error', errorFilter.value.trim());
    const d = await api('GET', path + '/dlq?' + q);
    const rows = d.letters.map(({ queue_id: id, letter }) => {
      const detail = h('pre', { class: 'code', hidden: true, id: 'letter-' + id }, JSON.stringify(letter, null, 2));
      return [h('tr', { 'data-queue-id': id },
        h('td', { class: 'num' }, id), h('td', {}, fmtAgo(letter.time)),
        h('td', {}, letter.sink ? 'sink ' + letter.sink : 'processor ' + (letter.processor || '?')),
        h('td', { class: 'error-text' }, letter.error),
        h('td', { class: 'row-actions' },
          h('button', { type: 'button', 'aria-controls': 'letter-' + id, onclick: (ev) => { detail.hidden = !detail.hidden; ev.target.setAttribute('aria-expanded', String(!detail.hidden)); } }, 'View'),
          h('button', { type: 'button', 'data-action': 'redrive', onclick: () => act('Redrive', 'Deliver dead letter ' + id + ' again? It leaves the queue only once delivered.', () => api('POST', path + '/dlq/redrive', { id })).then(loadDlq) }, 'Redrive'),
          h('button', { type: 'button', class: 'danger', 'data-action': 'acknowledge', onclick: () => act('Acknowledge', 'Discard dead letter ' + id + '? Its event is not delivered.', () => api('DELETE', path + '/dlq/' + id)).then(loadDlq) }, 'Acknowledge'))),
      h('tr', { class: 'detail' }, h('td', { colspan: 5 }, detail))];
    });
    dlqList.replaceChildren(
      h('p', { id: 'dlq-total' }, d.total + ' dead letter(s) in the queue' + (d.letters.length < d.total ? ', ' + d.letters.length + ' shown' : '')),
      d.letters.length ? h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'dlq-table' },
        h('thead', {}, h('tr', {}, ['Id', 'When', 'Set aside by', 'Error', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.flat()))) : '');
  };
  dlqBox.replaceChildren(
    h('form', { class: 'inline-form', onsubmit: (ev) => { ev.preventDefault(); loadDlq().catch(() => {}); } },
      h('label', { for: 'dlq-sink' }, 'Sink'), sinkFilter, h('label', { for: 'dlq-error' }, 'Error contains'), errorFilter,
      h('button', { type: 'submit' }, 'Filter / refresh'),
      h('button', { type: 'button', 'data-action': 'redrive-all', onclick: () => act('Redrive all', 'Deliver every dead letter of ' + name + ' again, oldest first? The first failure stops the redrive.', () => api('POST', path + '/dlq/redrive', {})).then(loadDlq) }, 'Redrive all')),
    dlqList);

  let formsDone = false;
  async function refresh() {
    const [v, hist, snap, row, schemas] = await Promise.all([
      api('GET', path), api('GET', historyPath()), api('GET', path + '/snapshot'),
      api('GET', path + '/checkpoint/stored'), api('GET', path + '/schemas'),
    ]);
    if (gen !== pageGeneration) return;
    current = v;
    renderSummary(v);
    renderActions(v);
    renderHistory(hist);
    renderCheckpoint(row, schemas);
    renderSnapshot(snap);
    if (!formsDone) { renderBackfillForm(v); formsDone = true; loadDlq().catch(() => {}); }
  }
  poll(gen, refresh);
  return current;
}
