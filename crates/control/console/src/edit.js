// Create or edit a pipeline from YAML; validation errors shown at their field.
import { act, api, detailText, enc, h, pageGeneration, view } from './core.js';

// ------------------------------------------------------ create/edit page
export function fieldLine(lines, field) {
  // Finds the line of a field path such as spec.sinks[0].config.path:
  // each key is looked up below the previous one, each [n] is the n-th
  // list item below it. Returns -1 when not found (the error is then
  // shown above the spec).
  const m = String(field).match(/^line (\d+)/);
  if (m) return Number(m[1]) - 1;
  const parts = String(field).split(/\.|(?=\[)/).filter(Boolean);
  let from = 0; let indent = -1;
  for (const part of parts) {
    const idx = part.match(/^\[(\d+)\]$/);
    let found = -1;
    let seen = -1;
    for (let i = from; i < lines.length; i++) {
      const ind = lines[i].search(/\S/);
      if (ind < 0 || lines[i].trim().startsWith('#')) continue;
      if (i > from && ind <= indent && !(idx && lines[i].trim().startsWith('-'))) break;
      if (idx) {
        if (lines[i].trim().startsWith('- ') || lines[i].trim() === '-') {
          if (++seen === Number(idx[1])) { found = i; indent = ind; break; }
        }
      } else {
        const key = part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        if (new RegExp('^\\s*(- )?["\']?' + key + '["\']?\\s*:').test(lines[i]) || new RegExp('[{,]\\s*' + key + '\\s*:').test(lines[i])) {
          found = i; indent = ind; break;
        }
      }
    }
    if (found < 0) return from > 0 ? from : -1;
    from = found;
  }
  return from;
}

export function editPage(name) {
  const gen = pageGeneration;
  const area = h('textarea', { id: 'spec-yaml', rows: 22, spellcheck: 'false', 'aria-describedby': 'spec-help' });
  const out = h('div', { id: 'spec-errors', 'aria-live': 'assertive' });
  const submit = h('button', { type: 'submit' }, name ? 'Validate and replace' : 'Validate and create');
  view.replaceChildren(
    h('p', {}, h('a', { href: name ? '#/pipelines/' + enc(name) : '#/' }, '← Back')),
    h('h1', {}, name ? 'Edit ' + name : 'New pipeline'),
    h('form', { id: 'spec-form', onsubmit: save },
      h('label', { for: 'spec-yaml' }, 'Pipeline spec (YAML, one deltaforge/v1 Pipeline document)'),
      h('p', { id: 'spec-help', class: 'hint' }, name
        ? 'The shown spec has its secrets redacted: type them again before saving. Replacing restarts the pipeline from its checkpoint.'
        : 'Validated like the config file; errors are shown at their field below.'),
      area, h('div', { class: 'buttons' }, submit)),
    out);
  if (name) {
    api('GET', '/pipelines/' + enc(name)).then((v) => { if (gen === pageGeneration) area.value = toYaml(v.spec).replace(/^\n/, '') + '\n'; }).catch(() => {});
  } else {
    area.value = 'apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata:\n  name: my-pipeline\nspec:\n  source:\n    type: datagen\n    config:\n      id: my-source\n      rate: 100\n  sinks:\n    - type: stdout\n      config:\n        id: out\n';
  }
  async function save(ev) {
    ev.preventDefault();
    out.replaceChildren();
    const text = area.value;
    const ok = await act(name ? 'Replace' : 'Create', name ? 'Replace the spec of ' + name + '? It restarts from its checkpoint.' : null, async () => {
      try {
        const v = name ? await api('PUT', '/pipelines/' + enc(name), text, 'application/yaml')
          : await api('POST', '/pipelines', text, 'application/yaml');
        location.hash = '#/pipelines/' + enc(v.name);
      } catch (e) {
        showSpecErrors(e, text);
        throw e;
      }
    });
    return ok;
  }
  function showSpecErrors(e, text) {
    const errors = (e.body && e.body.detail && e.body.detail.errors) || [];
    if (!errors.length) {
      out.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, e.message + detailText(e)));
      return;
    }
    const lines = text.split('\n');
    const at = new Map();
    const unplaced = [];
    for (const err of errors) {
      const line = fieldLine(lines, err.field);
      if (line < 0) unplaced.push(err); else { if (!at.has(line)) at.set(line, []); at.get(line).push(err); }
    }
    const note = (err) => h('div', { class: 'field-error', role: 'alert', 'data-field': err.field },
      h('strong', {}, err.field + ': '), err.message, err.fix ? h('div', { class: 'fix' }, 'Fix: ' + err.fix) : '');
    const list = h('ol', { class: 'yaml-lines', 'aria-label': 'The spec with its errors' });
    lines.forEach((l, i) => {
      list.append(h('li', { class: at.has(i) ? 'has-error' : '', 'data-line': i + 1 }, h('code', {}, l || ' ')));
      if (at.has(i)) list.append(h('li', { class: 'error-line' }, at.get(i).map(note)));
    });
    out.replaceChildren(h('h2', {}, errors.length + ' problem(s) in the spec'), ...unplaced.map(note), list);
  }
}

// JSON → YAML for the edit form (block style; strings quoted when needed).
export function toYaml(value, indent) {
  indent = indent || '';
  const scalar = (v) => {
    if (v === null) return 'null';
    if (typeof v === 'string') return /^[A-Za-z0-9_./@${}:-][A-Za-z0-9_ ./@${}:-]*$/.test(v) && !/: |^(true|false|null|yes|no|on|off|[0-9.eE+-]+)$/i.test(v) && !v.endsWith(':') ? v : JSON.stringify(v);
    return String(v);
  };
  if (Array.isArray(value)) {
    if (!value.length) return ' []';
    return value.map((v) => '\n' + indent + '-' + (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length
      ? toYaml(v, indent + '  ').replace(/^\n\s*/, ' ') : (v !== null && typeof v === 'object' ? toYaml(v, indent + '  ') : ' ' + scalar(v)))).join('');
  }
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value);
    if (!keys.length) return ' {}';
    return keys.map((k) => '\n' + indent + k + ':' + (value[k] !== null && typeof value[k] === 'object' ? toYaml(value[k], indent + '  ') : ' ' + scalar(value[k]))).join('');
  }
  return ' ' + scalar(value);
}
