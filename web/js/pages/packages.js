// Packages & Scripts: the two object stores, app packages (installers and
// binaries, up to 8 GiB each) and script objects (manifest script bodies,
// up to 4 MiB), each newest first with a download link. Operators upload
// under a name and version (with a progress bar; the same name and version
// replaces the object) and delete; a refusal (400, 413) shows in place.

import { api, canOperate, currentUser, download, upload } from '../api.js';
import {
  fmtBytes, fmtInt, fmtTime, h, mount, say, table,
} from '../ui.js';
import { panel, progressBar } from '../widgets.js';

const KINDS = [
  {
    id: 'packages', path: '/api/app-packages', title: 'App packages', noun: 'app package',
    name: 'webex', version: '2025.03', empty: 'No app package yet.',
  },
  {
    id: 'scripts', path: '/api/script-objects', title: 'Script objects', noun: 'script object',
    name: 'inventory-os', version: '3', empty: 'No script object yet.',
  },
];

const enc = encodeURIComponent;
const objectPath = (kind, name, version) => `${kind.path}/${enc(name)}/${enc(version)}`;

/** One store: its table, a status line and, for operators, the upload form. */
function section(ctx, kind, operator) {
  const counts = h('span', { class: 'hint', 'aria-live': 'polite' });
  const list = panel(kind.title, { id: kind.id, extra: counts });
  const status = h('p', { id: `${kind.id}-status`, 'aria-live': 'polite' });
  list.el.append(status);
  let rows = [];

  function downloadLink(o) {
    const fallback = `${o.name}-${o.version}`;
    const a = h('a', {
      href: objectPath(kind, o.name, o.version), download: fallback, 'aria-label': `Download ${o.name} ${o.version}`,
    }, 'Download');
    a.addEventListener('click', (e) => {
      e.preventDefault();
      say(status, `Downloading ${o.name} ${o.version}…`);
      download(objectPath(kind, o.name, o.version), fallback, {
        signal: ctx.signal,
        onProgress: (n) => say(status, `Downloading ${o.name} ${o.version}… ${fmtBytes(n)}`),
      })
        .then(({ name, bytes }) => say(status, `Saved ${name} (${fmtBytes(bytes)}).`))
        .catch((err) => {
          if (err.name !== 'AbortError') say(status, err.message, true);
        });
    });
    return a;
  }

  async function remove(button, o) {
    if (!window.confirm(`Delete the ${kind.noun} ${o.name} ${o.version}?`)) return;
    button.disabled = true;
    say(status, `Deleting ${o.name} ${o.version}…`);
    try {
      await api(objectPath(kind, o.name, o.version), { method: 'DELETE', signal: ctx.signal });
      say(status, `Deleted ${o.name} ${o.version}.`);
      await refresh();
    } catch (e) {
      if (e.name === 'AbortError') return;
      say(status, e.message, true);
      button.disabled = false;
    }
  }

  const refresh = () => list.load(async (body) => {
    rows = await api(kind.path, { signal: ctx.signal });
    counts.textContent = `${fmtInt(rows.length)} object(s)`;
    const columns = [
      { label: 'Name', value: (o) => o.name },
      { label: 'Version', class: 'mono', value: (o) => o.version },
      { label: 'Size', num: true, value: (o) => fmtBytes(o.size) },
      { label: 'Digest', class: 'mono', value: (o) => o.digest ?? '—' },
      { label: 'Modified', value: (o) => fmtTime(o.modified) },
      { label: 'File', value: downloadLink },
    ];
    if (operator) {
      columns.push({
        label: 'Action',
        value: (o) => {
          const button = h('button', { type: 'button', 'aria-label': `Delete ${o.name} ${o.version}` }, 'Delete');
          button.addEventListener('click', () => remove(button, o));
          return button;
        },
      });
    }
    mount(body, table(columns, rows, { empty: kind.empty, label: kind.title }));
  });

  if (!operator) return { el: list.el, refresh };

  // Upload: name and version are the object's key; the bar follows the bytes sent.
  const fileInput = h('input', { type: 'file', name: 'file', required: true });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Upload');
  const progress = progressBar('Upload progress');
  const uploadStatus = h('p', { id: `${kind.id}-upload-status`, 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', 'aria-label': `Upload ${kind.noun}`, id: `${kind.id}-upload` },
    h('h3', {}, `Upload ${kind.noun}`),
    h('div', { class: 'toolbar' },
      h('label', {}, 'Name', h('input', {
        name: 'name', required: true, spellcheck: 'false', autocomplete: 'off', placeholder: kind.name,
      })),
      h('label', {}, 'Version', h('input', {
        name: 'version', required: true, spellcheck: 'false', autocomplete: 'off', placeholder: kind.version,
      })),
      h('label', {}, 'File', fileInput)),
    h('div', {}, button),
    progress.el, uploadStatus);
  list.el.append(form);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = form.elements.namedItem('name').value.trim();
    const version = form.elements.namedItem('version').value.trim();
    const file = fileInput.files[0];
    if (!name || !version || !file) return;
    if (rows.some((o) => o.name === name && o.version === version)
      && !window.confirm(`Replace the ${kind.noun} ${name} ${version}?`)) return;
    button.disabled = true;
    progress.reset();
    delete uploadStatus.dataset.done;
    say(uploadStatus, `Uploading ${file.name}…`);
    try {
      const out = await upload(objectPath(kind, name, version), file, { onProgress: progress.track, signal: ctx.signal });
      say(uploadStatus, `Uploaded ${out.name} ${out.version} (${fmtBytes(out.size)}).`);
      uploadStatus.dataset.done = `${out.name}/${out.version}`;
      form.reset();
      await refresh();
    } catch (err) {
      if (err.name !== 'AbortError') say(uploadStatus, err.message, true);
    } finally {
      button.disabled = false;
    }
  });
  return { el: list.el, refresh };
}

export default {
  title: 'Packages & Scripts',
  nav: 'packages',
  async render(ctx) {
    const operator = canOperate((await currentUser()).role);
    const sections = KINDS.map((kind) => section(ctx, kind, operator));
    mount(ctx.root,
      h('h1', {}, 'Packages & Scripts'),
      operator ? null : h('p', { class: 'hint', id: 'packages-read-only' }, 'Read-only: uploading and deleting need the operator role.'),
      h('div', { class: 'stack-gap' }, sections.map((s) => s.el)));
    await Promise.all(sections.map((s) => s.refresh()));
  },
};
