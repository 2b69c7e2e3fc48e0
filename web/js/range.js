// Time ranges in the URL: a preset (`range=24h`) or an absolute zoom
// (`from`/`to`, ISO), and the bucket step that keeps a chart ≤ ~500 points.

export const PRESETS = [
  { key: '1h', seconds: 3600 },
  { key: '24h', seconds: 86_400 },
  { key: '7d', seconds: 7 * 86_400 },
  { key: '30d', seconds: 30 * 86_400 },
];

// Agents sample every 60 s, so a finer step only adds empty buckets.
const STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400];
export const MAX_POINTS = 500;

/** The smallest step that gives at most MAX_POINTS buckets over `spanSeconds`. */
export function stepFor(spanSeconds) {
  return STEPS.find((s) => spanSeconds / s <= MAX_POINTS) || STEPS[STEPS.length - 1];
}

/** Reads the range of a page's URL query. */
export function resolveRange(query, fallback = '24h') {
  const from = query.get('from');
  const to = query.get('to');
  if (from && to) {
    const f = new Date(from);
    const t = new Date(to);
    if (!Number.isNaN(f.getTime()) && !Number.isNaN(t.getTime()) && f < t) {
      const span = (t - f) / 1000;
      return { from: f, to: t, span, step: stepFor(span), preset: null };
    }
  }
  const preset = PRESETS.find((p) => p.key === query.get('range')) || PRESETS.find((p) => p.key === fallback);
  const t = new Date();
  const step = stepFor(preset.seconds);
  // A preset starts on a step boundary: the first bucket is whole (not a
  // sliver of its samples), and whole minutes answer from memory.
  const stepMs = step * 1000;
  const f = new Date(Math.floor((t.getTime() - preset.seconds * 1000) / stepMs) * stepMs);
  return { from: f, to: t, span: preset.seconds, step, preset: preset.key };
}

/** Query parameters for an API call over `range`. */
export function rangeParams(range) {
  return { from: range.from.toISOString(), to: range.to.toISOString(), step: `${range.step}s` };
}

/** Human label for a step, e.g. `5 min`. */
export function stepLabel(seconds) {
  if (seconds % 86_400 === 0) return `${seconds / 86_400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  return `${seconds / 60} min`;
}
