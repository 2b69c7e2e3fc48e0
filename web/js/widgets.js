// Controls several pages share: the range picker, data panels and the
// upload progress bar.

import { PRESETS, resolveRange, stepLabel } from './range.js';
import { fmtBytes, h, mount, stateBox } from './ui.js';

/**
 * 1h / 24h / 7d / 30d buttons bound to the URL's `range` (a click clears
 * a drag-zoom's `from`/`to`); calls `onChange()` after the URL changed.
 */
export function rangePicker(ctx, fallback, onChange) {
  const wrap = h('div', { class: 'toolbar-group' });
  const draw = () => {
    const range = resolveRange(ctx.query, fallback);
    const seg = h('div', { class: 'seg', role: 'group', 'aria-label': 'Time range' },
      PRESETS.map((p) => h('button', {
        type: 'button',
        'aria-pressed': String(range.preset === p.key),
        onclick: () => {
          ctx.setQuery({ range: p.key, from: null, to: null }, { push: true });
          draw();
          onChange();
        },
      }, p.key)));
    const note = range.preset
      ? h('span', { class: 'hint' }, `step ${stepLabel(range.step)} · drag on a chart to zoom`)
      : h('span', { class: 'hint' },
        `${range.from.toLocaleString()} – ${range.to.toLocaleString()} (step ${stepLabel(range.step)}) `,
        h('button', {
          type: 'button', class: 'ghost',
          onclick: () => {
            ctx.setQuery({ from: null, to: null }, { push: true });
            draw();
            onChange();
          },
        }, 'Reset zoom'));
    mount(wrap, seg, ' ', note);
  };
  draw();
  wrap.redraw = draw;
  return wrap;
}

/**
 * Zoom handler for charts: puts the dragged window in the URL. Charts
 * with a shared cursor all report the same selection; one drag is one
 * history entry.
 */
export function zoomTo(ctx, picker, onChange) {
  let last = 0;
  return (from, to) => {
    if (Date.now() - last < 500) return;
    last = Date.now();
    ctx.setQuery({ from: from.toISOString(), to: to.toISOString() }, { push: true });
    picker.redraw();
    onChange();
  };
}

/**
 * A titled panel whose body shows loading, then what `load(body)` draws;
 * later loads (refreshes) keep the old content until new data is ready.
 */
export function panel(title, { extra, id } = {}) {
  const body = h('div', { class: 'panel-body' }, stateBox('loading'));
  const el = h('section', { class: 'panel', id, 'aria-label': typeof title === 'string' ? title : undefined },
    h('div', { class: 'chart-title' }, h('h2', {}, title), extra), body);
  return {
    el,
    body,
    async load(fn) {
      try {
        await fn(body);
      } catch (e) {
        if (e.name === 'AbortError') return;
        mount(body, stateBox('error', e.message || String(e)));
      }
    },
  };
}

/**
 * An upload's progress bar and percentage, hidden until the first report:
 * `track(sent, total)` is the `onProgress` of `upload()`, `reset()` hides it.
 */
export function progressBar(label) {
  const bar = h('progress', { max: '1', value: '0', 'aria-label': label });
  const text = h('span', { class: 'hint' });
  const el = h('div', { class: 'progress', hidden: true }, bar, text);
  return {
    el,
    track(sent, total) {
      el.hidden = false;
      bar.max = total;
      bar.value = sent;
      text.textContent = `${Math.floor((sent / total) * 100)} % · ${fmtBytes(sent)} of ${fmtBytes(total)}`;
    },
    reset() {
      el.hidden = true;
      bar.max = 1;
      bar.value = 0;
      text.textContent = '';
    },
  };
}
