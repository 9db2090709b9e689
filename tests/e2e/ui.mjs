// End-to-end test of the web UI in headless Chromium (playwright-core).
//
//   node tests/e2e/ui.mjs --url http://127.0.0.1:PORT --image photo.jpg \
//        --corrupt bad.jpg --out ARTIFACT_DIR [--gallery yes|no] [--abort yes]
//
// Opens the UI, picks a sample from the gallery (or uploads --image when the
// gallery is not shown: the samples are only for the built-in model; with
// --gallery, checks it is shown or replaced by the note that says why),
// waits for predictions and the overlay, changes the
// class and checks the overlay changed, uploads a corrupt file and checks the
// error shows; with --abort yes, switches from a ScoreCAM under way to
// GradCAM and checks that the server stopped the ScoreCAM's run.
// Screenshots go to --out.  playwright-core is resolved from
// $CAMSERVE_NODE_MODULES, else tests/e2e/node_modules.  Exit 0 = pass.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const modules = process.env.CAMSERVE_NODE_MODULES || path.join(here, 'node_modules');
const require = createRequire(path.join(modules, 'noop.js'));
const { chromium } = require('playwright-core');

const out = args.out || '/tmp/camserve-ui';
mkdirSync(out, { recursive: true });
const TIMEOUT = 20000;

function fail(msg) {
  console.error(`ui.mjs: FAIL: ${msg}`);
  process.exitCode = 1;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--no-first-run', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.goto(args.url, { waitUntil: 'load', timeout: TIMEOUT });
  await page.waitForSelector('#status.ok', { timeout: TIMEOUT });
  await page.screenshot({ path: path.join(out, '1-empty.png') });

  // a sample if the gallery is shown, else an upload
  const samples = await page.locator('#gallery-wrap:not([hidden]) #gallery button').count();
  const note = await page.locator('#gallery-note:not([hidden])').count();
  if (args.gallery === 'yes' && (samples === 0 || note !== 0))
    fail(`the built-in model: ${samples} samples shown, note shown: ${note}`);
  if (args.gallery === 'no' && (samples !== 0 || note !== 1))
    fail(`another model: ${samples} samples shown (want none), note shown: ${note} (want 1)`);
  if (samples > 0) {
    console.log(`ui.mjs: ${samples} samples; picking the first`);
    await page.locator('#gallery button').first().click();
  } else {
    console.log('ui.mjs: no samples; uploading', args.image);
    await page.setInputFiles('#file', args.image);
  }
  await page.waitForSelector('#preds li.pred', { timeout: TIMEOUT });
  await page.waitForFunction(() => {
    const i = document.getElementById('heat-layer');
    return i && i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 0;
  }, null, { timeout: TIMEOUT });
  const npred = await page.locator('#preds li.pred').count();
  if (npred < 1 || npred > 5) fail(`expected 1..5 predictions, got ${npred}`);
  const badge = await page.textContent('#cache-badge');
  if (!/cache (hit|miss)/.test(badge)) fail(`cache badge says '${badge}'`);
  const nstages = await page.locator('#timings .timing').count();
  if (nstages !== 5) fail(`expected 5 timing bars, got ${nstages}`);
  await page.screenshot({ path: path.join(out, '2-overlay.png') });
  const before = await page.getAttribute('#heat-layer', 'src');

  // another class: re-requested by image_id, a different map
  // typed into the class box (a label where the model has them), then Enter
  const classes = await page.locator('#class-list option')
    .evaluateAll((os) => os.map((o) => ({ value: o.value, index: o.label.slice(1) })));
  if (classes.length < 2) fail(`the class list offers ${classes.length} classes`);
  const top = await page.locator('#preds li.pred.selected small').textContent().catch(() => '');
  const pick = classes.find((c) => `#${c.index}` !== (top || '').trim());
  await page.fill('#class', pick.value);
  await page.press('#class', 'Enter');
  await page.waitForFunction((b) => {
    const i = document.getElementById('heat-layer');
    return i.src !== b && document.getElementById('busy').hidden;
  }, before, { timeout: TIMEOUT }).catch(() => fail(`the heatmap did not change with the class '${pick.value}'`));
  const caption = await page.textContent('#cam-caption');
  if (!caption.includes(`class ${pick.index} `)) fail(`caption '${caption}' does not name class ${pick.index} (${pick.value})`);
  // a label that is no class's exactly: the server's 400 names those containing it
  if (pick.value !== pick.index) {
    const part = pick.value.slice(1, 3);
    await page.fill('#class', part);
    await page.press('#class', 'Enter');
    await page.waitForSelector('#error:not([hidden])', { timeout: TIMEOUT })
      .catch(() => fail(`no error shown for class '${part}'`));
    const msg = await page.textContent('#error-text');
    if (!msg.includes(`unknown class '${part}'`) || !msg.includes(`${pick.index} ${pick.value}`))
      fail(`error for class '${part}' says '${msg}'`);
    await page.screenshot({ path: path.join(out, '3a-class-unknown.png') });
    await page.click('#error-close');
    await page.fill('#class', pick.value);
    await page.press('#class', 'Enter');
    await page.waitForFunction(() => document.getElementById('busy').hidden, null, { timeout: TIMEOUT });
  }
  // Another method while a ScoreCAM (a forward run per channel) is under
  // way: the UI aborts the request whose answer it would drop, and the
  // server stops the run that nobody waits for any more.
  if (args.abort === 'yes') {
    // A ScoreCAM that answers before the switch (a fast machine, or a
    // cached answer) leaves nothing to abort: then another class, so that
    // the next ScoreCAM is a new computation, up to three tries.  A run
    // that never aborts fails: the check is not passed by skipping it.
    const others = classes.filter((c) => c.value !== pick.value);
    let failure = null;
    for (let attempt = 0; attempt < 3 && !failure; attempt++) {
      if (attempt > 0) {
        const other = others[(attempt - 1) % others.length];
        await page.fill('#class', other.value);
        await page.press('#class', 'Enter');
        await page.waitForFunction(() => document.getElementById('busy').hidden, null, { timeout: TIMEOUT });
      }
      let scorecam = null, finished = false;
      const watch = (r) => { if (r === scorecam) finished = true; };
      page.on('requestfinished', watch);
      const sent = page.waitForRequest((r) => r.url().includes('/v1/explain') && /scorecam/.test(r.postData() || ''),
                                       { timeout: TIMEOUT });
      await page.selectOption('#method', 'scorecam');
      scorecam = await sent;
      const finishedBefore = finished;
      await page.selectOption('#method', 'gradcam');
      await page.waitForFunction(() => document.getElementById('busy').hidden &&
        document.getElementById('cam-caption').textContent.startsWith('gradcam'), null, { timeout: TIMEOUT })
        .catch(() => fail('after switching back to gradcam, no gradcam map'));
      page.off('requestfinished', watch);
      if (finishedBefore) {
        console.log(`ui.mjs: try ${attempt + 1}: the ScoreCAM answer came before the switch: nothing to abort`);
        continue;
      }
      failure = scorecam.failure();
      if (!failure) fail('the ScoreCAM request under way was not aborted when the method changed');
    }
    if (!failure) {
      fail('three ScoreCAMs were answered before the method could be switched: the abort was not exercised');
    } else {
      let n = 0;
      for (let i = 0; i < 50 && n < 1; i++) {
        const m = await (await fetch(new URL('/metrics', args.url))).text();
        // stopped under way, or dropped unrun had it still been queued
        n = Number((m.match(/^camserve_runs_stopped_total\{reason="client_gone"\} (\d+)/m) || [])[1] || 0) +
            Number((m.match(/^camserve_runs_skipped_total (\d+)/m) || [])[1] || 0);
        if (n < 1) await new Promise((r) => setTimeout(r, 100));
      }
      if (n < 1) fail(`the ScoreCAM request was aborted (${failure.errorText}) but the server neither stopped nor skipped its run`);
      else console.log('ui.mjs: switching method aborted the ScoreCAM request, and the server stopped or skipped its run');
    }
  }
  await page.click('#view-side');
  await page.waitForSelector('#side:not([hidden])', { timeout: TIMEOUT });
  await page.screenshot({ path: path.join(out, '3-class-side-by-side.png') });

  // a corrupt file: a readable error
  await page.setInputFiles('#file', args.corrupt);
  await page.waitForSelector('#error:not([hidden])', { timeout: TIMEOUT });
  const err = await page.textContent('#error-text');
  if (!/invalid image/i.test(err)) fail(`error message '${err}' does not say invalid image`);
  const marked = await page.locator('#gallery button.on').count();
  if (marked !== 0) fail(`after the user's own file, ${marked} sample(s) still marked as the current image`);
  await page.screenshot({ path: path.join(out, '4-error.png') });

  if (consoleErrors.filter((e) => !/415|Failed to load resource/.test(e)).length)
    fail(`console errors: ${consoleErrors.join(' | ')}`);
  console.log(`ui.mjs: ${process.exitCode ? 'FAILED' : 'ok'}; screenshots in ${out}`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
