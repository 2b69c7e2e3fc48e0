// uPlot wrappers: time-series line charts and the stacked process timeline.
// A chart keeps its uPlot instance across refreshes and only swaps data, so
// auto-refresh never flickers; it is rebuilt only when its series change.

/* global uPlot */

export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export const PALETTE = ['#3b7dd8', '#e0663b', '#2e9e6a', '#b453c2', '#d2a21f', '#20a4b8', '#d0456b', '#7a8b2a'];

/** A colour that depends on the name only: stable across buckets, refreshes and PCs. */
export function colorForName(name) {
  if (name === 'other') return '#8a93a3';
  let hash = 2166136261;
  for (let i = 0; i < name.length; i += 1) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 16777619) >>> 0;
  }
  const hue = Math.round(((hash % 360) * 137.508) % 360);
  return `hsl(${hue} 62% 52%)`;
}

function withAlpha(color, alpha) {
  if (color.startsWith('hsl(')) return color.replace(')', ` / ${alpha})`);
  const n = parseInt(color.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/**
 * Aligns API points (`{at, ...}`) on a time axis, with a null wherever a
 * bucket is absent so the line breaks instead of bridging the gap.
 * `pick` maps a point to its y values. Returns uPlot data columns.
 */
export function alignPoints(points, stepSeconds, pick, seriesCount) {
  const xs = [];
  const ys = Array.from({ length: seriesCount }, () => []);
  let prev = null;
  for (const p of points) {
    const x = Date.parse(p.at) / 1000;
    if (prev !== null && x - prev > stepSeconds * 1.5) {
      xs.push(prev + stepSeconds);
      ys.forEach((col) => col.push(null));
    }
    xs.push(x);
    const vals = pick(p);
    ys.forEach((col, i) => col.push(vals[i] ?? null));
    prev = x;
  }
  return [xs, ...ys];
}

/**
 * A time chart in `el`. `series`: `[{label, color}]`; `fmt` formats y
 * values; `onZoom(fromDate, toDate)` is called after a drag-select.
 */
export class TimeChart {
  constructor(el, { series, fmt = String, height = 220, onZoom, sync, stacked = false }) {
    this.el = el;
    this.fmt = fmt;
    this.height = height;
    this.onZoom = onZoom;
    this.sync = sync;
    this.stacked = stacked;
    this.series = series;
    this.plot = null;
    this.raw = null;
    this.resize = new ResizeObserver(() => {
      if (this.plot && this.el.clientWidth > 0) this.plot.setSize({ width: this.el.clientWidth, height: this.height });
    });
    this.resize.observe(el);
  }

  /** Shows `data` (`[xs, ...ys]`); rebuilds only if `series` changed. */
  update(data, series = this.series) {
    const same = series.length === this.series.length && series.every((s, i) => s.label === this.series[i].label);
    this.series = series;
    let shown = data;
    let bands = [];
    if (this.stacked) ({ data: shown, bands } = stack(data));
    this.raw = data;
    if (this.plot && same) {
      this.plot.setData(shown);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.el.replaceChildren();
    this.plot = new uPlot(this.options(bands), shown, this.el);
  }

  options(bands) {
    const axis = cssVar('--axis');
    const grid = cssVar('--grid');
    const fmt = this.fmt;
    const raw = () => this.raw;
    const onZoom = this.onZoom;
    return {
      width: Math.max(this.el.clientWidth, 200),
      height: this.height,
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.05 : 1] } },
      axes: [
        { stroke: axis, grid: { stroke: grid }, ticks: { stroke: grid } },
        {
          stroke: axis,
          grid: { stroke: grid },
          ticks: { stroke: grid },
          values: (u, vals) => vals.map((v) => fmt(v)),
          // Wide enough for the longest label ("14.3 MiB/s"), not clipped.
          size: (u, vals) => (vals ? Math.max(48, ...vals.map((v) => String(v).length * 7 + 20)) : 48),
        },
      ],
      series: [
        {},
        ...this.series.map((s, i) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          fill: this.stacked ? withAlpha(s.color, 0.55) : s.fill,
          points: { show: false },
          value: (u, v, si, idx) => {
            const r = raw();
            const val = idx === null || !r ? v : r[i + 1][idx];
            return val === null || val === undefined ? '—' : fmt(val);
          },
        })),
      ],
      bands,
      cursor: {
        drag: { x: !!onZoom, y: false, setScale: false },
        sync: this.sync ? { key: this.sync } : undefined,
      },
      hooks: {
        setSelect: [(u) => {
          if (!onZoom || u.select.width < 4) return;
          const from = u.posToVal(u.select.left, 'x');
          const to = u.posToVal(u.select.left + u.select.width, 'x');
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          onZoom(new Date(from * 1000), new Date(to * 1000));
        }],
      },
    };
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/** Cumulative sums bottom-up, and the bands that fill between neighbours. */
function stack(data) {
  const [xs, ...ys] = data;
  // A bucket no series has is a gap (see alignPoints); a name missing
  // from a bucket that others have contributes 0 there.
  const gap = xs.map((_, j) => ys.every((col) => col[j] === null || col[j] === undefined));
  const acc = new Array(xs.length).fill(0);
  const stacked = ys.map((col) => col.map((v, j) => {
    if (gap[j]) return null;
    acc[j] += v ?? 0;
    return acc[j];
  }));
  const bands = ys.slice(1).map((_, i) => ({ series: [i + 2, i + 1] }));
  return { data: [xs, ...stacked], bands };
}
