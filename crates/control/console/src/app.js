// DeltaForge web console: a client of the REST API, served by the binary.
// Entry point (an ES module): the hash router and the login form; the pages
// live in list.js, pipeline.js and edit.js, shared code in core.js.
// Plain browser JavaScript (no build step). Every datum comes from the API
// with the bearer token kept in this tab's sessionStorage; every mutation is
// a same-origin fetch with a JSON (or YAML) body. Text from the server is
// only ever set with textContent, never parsed as HTML.
import { TOKEN_KEY, showLogin, stopPolling, token } from './core.js';
import { editPage, fieldLine, toYaml } from './edit.js';
import { listPage } from './list.js';
import { pipelinePage } from './pipeline.js';

document.getElementById('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = document.getElementById('token-input');
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = '';
  document.getElementById('login').hidden = true;
  route();
});
document.getElementById('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin('the token was forgotten');
});

function route() {
  stopPolling();
  document.getElementById('login').hidden = true;
  document.getElementById('forget-token').hidden = !token();
  const hash = decodeURIComponent(location.hash.slice(1) || '/');
  let m;
  if ((m = hash.match(/^\/pipelines\/([^/]+)\/edit$/))) editPage(m[1]);
  else if ((m = hash.match(/^\/pipelines\/([^/]+)$/))) pipelinePage(m[1]);
  else if (hash === '/new') editPage(null);
  else listPage();
  document.getElementById('main').focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
window.deltaforgeConsole = { toYaml, fieldLine };

route();
