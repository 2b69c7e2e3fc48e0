// Measures the dashboard's time-to-data: from navigation start to the
// moment the fleet health and both fleet charts are drawn (the page's
// `kanade:dashboard-data` mark). Not a test: it prints numbers.
//
//   KANADE_URL=http://127.0.0.1:8080 KANADE_TOKEN=... node tests/browser/time-to-data.mjs [loads]

import { chromium } from 'playwright-core';

const BASE = process.env.KANADE_URL || 'http://127.0.0.1:8080';
const TOKEN = process.env.KANADE_TOKEN || '';
const LOADS = Number(process.argv[2] || 5);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

async function measure(range) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  await context.addInitScript((t) => { if (t) localStorage.setItem('kanade.token', t); }, TOKEN);
  const page = await context.newPage();
  await page.goto(`${BASE}/?range=${range}`);
  await page.waitForFunction(() => performance.getEntriesByName('kanade:dashboard-data').length > 0, null, { timeout: 60_000 });
  const ms = await page.evaluate(() => performance.getEntriesByName('kanade:dashboard-data')[0].startTime);
  const points = await page.$$eval('#fleet-cpu canvas', (c) => c.length);
  await context.close();
  return { ms: Math.round(ms), charts: points };
}

for (const range of ['24h', '1h', '7d', '30d']) {
  const runs = [];
  for (let i = 0; i < LOADS; i += 1) runs.push((await measure(range)).ms);
  const sorted = [...runs].sort((a, b) => a - b);
  console.log(`range ${range}: time-to-data ${runs.join(', ')} ms (median ${sorted[Math.floor(sorted.length / 2)]} ms)`);
}
await browser.close();
