// The web UI in a real Chromium (playwright-core driving the Debian `chromium` package),
// against the real binary: `regserve server` with a token and `regserve serve` following
// models:/iris/Production, both on free ports over one temporary --data-dir.
//
// The flow: a write without the cookie lands on /login; log in; create the registered model in
// the UI; register its version files with the CLI (the UI has no upload: files are registered
// by `regserve models register` or the MLflow client); edit the Markdown description; promote
// v1, start `serve`, promote v2 through the Stage drop-down and watch the status page switch;
// XSS payloads in descriptions and tags fire no dialog; delete behind the confirm page; phone
// layout. Screenshots of every page go to target/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.REGSERVE_BIN || path.join(REPO, 'target/debug/regserve');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SHOTS = path.join(REPO, 'target/screenshots');
const TOKEN = 'browser-test-token-7c1e';
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const temp = [];
const processes = [];
let dataDir, registry, serve, context, page;
const dialogs = [];

function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temp.push(dir);
  return dir;
}

/** Start `regserve <args> --host 127.0.0.1 --port 0`; resolves with its base URL once it logs it. */
function startRegserve(args, env = {}) {
  const proc = spawn(BIN, ['--data-dir', dataDir, ...args, '--host', '127.0.0.1', '--port', '0'], {
    cwd: REPO,
    env: { ...process.env, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  processes.push(proc);
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`regserve ${args[0]} did not start:\n${log}`)), 30_000);
    proc.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /listening on (http:\/\/[0-9.:]+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[1], log: () => log });
      }
    });
    proc.on('exit', (code) => reject(new Error(`regserve ${args[0]} exited with ${code}:\n${log}`)));
  });
}

function cli(...args) {
  return execFileSync(BIN, ['--data-dir', dataDir, ...args], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** The page fits its viewport: nothing sticks out sideways. */
async function assertNoSidewaysScroll() {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= inner, `the page is ${scroll}px wide in a ${inner}px viewport`);
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  dataDir = tempDir('regserve-ui-data-');
  registry = await startRegserve(['server'], { REGSERVE_AUTH_TOKEN: TOKEN });
  context = await chromium.launchPersistentContext(tempDir('regserve-ui-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  page.on('dialog', async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
});

after(async () => {
  await context?.close();
  for (const p of processes) if (p.exitCode === null) p.kill('SIGTERM');
  for (const d of temp) fs.rmSync(d, { recursive: true, force: true });
});

test('a write without the token cookie goes to the login page; logging in sets the cookie', async () => {
  await page.goto(registry.url + '/');
  await page.fill('input[name=name]', 'iris');
  await page.click('button:has-text("Create model")');
  assert.match(page.url(), /\/login\?why=write&next=%2F$/);
  assert.match(await page.textContent('.flash.info'), /^Log in to make changes/);
  await shot('01-login');

  await page.fill('input[name=token]', 'wrong');
  await page.click('button:has-text("Log in")');
  await page.getByText("That is not the server's token.").waitFor();

  await page.fill('input[name=token]', TOKEN);
  await page.click('button:has-text("Log in")');
  await page.getByText('Logged in.').waitFor();
  assert.equal(new URL(page.url()).pathname, '/');
  const cookie = (await context.cookies()).find((c) => c.name === 'regserve_token');
  assert.ok(cookie, 'the token cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/');
});

test('create the registered model in the UI, register its files with the CLI', async () => {
  await page.fill('input[name=name]', 'iris');
  await page.fill('textarea[name=description]', 'Iris **classifier**');
  await page.click('button:has-text("Create model")');
  assert.equal(new URL(page.url()).pathname, '/models/iris');
  await page.getByText("Created registered model 'iris'.").waitFor();
  assert.equal(await page.textContent('.markdown strong'), 'classifier');

  // Model files are registered by the CLI (or the MLflow client), not uploaded through the UI.
  cli('models', 'register', 'models/iris-v1', '--name', 'iris');
  cli('models', 'register', 'models/iris-v2', '--name', 'iris');
  await page.reload();
  assert.equal(await page.locator('table.list tbody tr').count(), 2);
});

test('edit the description: the Markdown renders', async () => {
  await page.click('summary:has-text("Edit description")');
  await page.fill('textarea[name=description]',
    '## Iris classifier\n\nA **logistic regression** on the [iris data](https://en.wikipedia.org/wiki/Iris_flower_data_set).\n\n' +
    '| version | trained on |\n|---|---|\n| v1 | 150 rows |\n| v2 | 150 rows, tuned |\n\n- inputs: `sepal_length`, `sepal_width`, `petal_length`, `petal_width`\n- outputs: label, probabilities\n');
  await page.click('text=Save description');
  await page.getByText('Saved the description.').waitFor();
  assert.equal(await page.textContent('.markdown h2'), 'Iris classifier');
  assert.equal(await page.textContent('.markdown strong'), 'logistic regression');
  assert.equal(await page.locator('.markdown table td').count(), 4);
  assert.equal(await page.getAttribute('.markdown a', 'rel'), 'noopener noreferrer nofollow');
});

async function transition(version, stage, archive) {
  await page.goto(`${registry.url}/models/iris/versions/${version}`);
  await page.selectOption('select[name=stage]', stage);
  if (archive) await page.check('input[name=archive_existing]');
  await page.click('button:has-text("Transition")');
  await page.getByText(`Version ${version} is now in ${stage}`).waitFor();
}

function servedVersion() {
  return page.locator('[data-uri="models:/iris/Production"] [data-version]');
}

test('promote v1, serve it; promote v2 through the Stage drop-down; the status page switches', async () => {
  await transition(1, 'Production', false);
  serve = await startRegserve(['serve', '-m', 'models:/iris/Production', '--poll-interval', '1s']);
  await page.goto(serve.url + '/');
  await servedVersion().filter({ hasText: 'v1' }).waitFor({ timeout: 30_000 });
  for (let i = 0; i < 5; i++) {
    const r = await fetch(serve.url + '/invocations', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }),
    });
    assert.equal(r.status, 200);
  }

  await transition(2, 'Production', true);
  await page.getByText('the other versions there are now Archived').waitFor();
  await shot('04-version');

  await page.goto(registry.url + '/models/iris');
  const row = (v) => page.locator('table.list tbody tr', { has: page.locator(`a:text-is("Version ${v}")`) });
  assert.equal(await row(2).locator('.badge').first().textContent(), 'Production');
  assert.equal(await row(1).locator('.badge').first().textContent(), 'Archived');
  await shot('03-model');

  // The status page refreshes itself (meta refresh): no reload here.
  await page.goto(serve.url + '/');
  await servedVersion().filter({ hasText: 'v2' }).waitFor({ timeout: 30_000 });
  const card = page.locator('[data-uri="models:/iris/Production"]');
  await card.getByText('v1 → v2').waitFor();
  assert.match(await card.locator('[data-requests]').textContent(), /^5$/);
  await shot('06-serve-status');
  await page.setViewportSize(PHONE);
  await assertNoSidewaysScroll();
  await shot('09-serve-status-phone');
  await page.setViewportSize(DESKTOP);
});

test('descriptions and tags with script render inert: no dialog fires', async () => {
  const payload = '<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[click me](javascript:alert(3))\n\n<a href="javascript:alert(4)">raw</a> **still markdown**';
  await page.goto(registry.url + '/models/iris/versions/2');
  await page.click('summary:has-text("Edit description")');
  await page.fill('textarea[name=description]', payload);
  await page.click('text=Save description');
  await page.getByText('Saved the description.').waitFor();
  const tagForm = page.locator('form[action$="/tags"]');
  await tagForm.locator('input[name=key]').fill('<script>alert(5)</script>');
  await tagForm.locator('input[name=value]').fill('<img src=x onerror=alert(6)>');
  await tagForm.locator('button').click();
  await page.locator('.flash.ok').waitFor();

  for (const url of ['/models/iris/versions/2', '/models/iris', '/']) {
    await page.goto(registry.url + url);
    await page.waitForLoadState('load');
  }
  await page.goto(registry.url + '/models/iris/versions/2');
  await page.click('.markdown a:has-text("click me")').catch(() => {});
  await page.goto(registry.url + '/models/iris/versions/2');
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, [], 'no script ran');
  const active = await page.evaluate(() => document.querySelectorAll(
    '.markdown script, [onerror], a[href^="javascript:" i]').length);
  assert.equal(active, 0);
  assert.equal(await page.textContent('.markdown strong'), 'still markdown');
  assert.equal(await page.textContent('table.kv th'), '<script>alert(5)</script>', 'tag keys show as text');
  assert.equal(await page.textContent('table.kv td.mono'), '<img src=x onerror=alert(6)>');
  await shot('11-xss-inert');
});

test('search with the filter grammar', async () => {
  cli('models', 'register', 'models/mlp', '--name', 'mlp-classifier', '--stage', 'Staging');
  await page.goto(registry.url + '/');
  await page.fill('input[name=filter]', "name LIKE 'ir%'");
  await page.click('button:has-text("Search")');
  const names = await page.locator('table.list tbody tr td:first-child a').allTextContents();
  assert.deepEqual(names, ['iris']);
  await page.click('text=Clear');
  assert.deepEqual(await page.locator('table.list tbody tr td:first-child a').allTextContents(), ['iris', 'mlp-classifier']);
  await shot('02-models');
});

test('delete behind a confirm page', async () => {
  await page.goto(registry.url + '/');
  await page.fill('input[name=name]', 'scratch');
  await page.click('button:has-text("Create model")');
  await page.click('text=Delete model…');
  assert.match(page.url(), /\/models\/scratch\/delete$/);
  await page.getByText('It cannot be undone.').waitFor();
  await shot('05-confirm-delete');
  await page.click('button:has-text("Delete scratch")');
  await page.getByText("Deleted registered model 'scratch'.").waitFor();
  assert.equal(new URL(page.url()).pathname, '/');
});

test('phone layout: pages fit a 390px screen', async () => {
  await page.setViewportSize(PHONE);
  for (const [url, name] of [['/', '07-models-phone'], ['/models/iris', '08-model-phone'], ['/models/iris/versions/1', '10-version-phone']]) {
    await page.goto(registry.url + url);
    await assertNoSidewaysScroll();
    await shot(name);
  }
  await page.setViewportSize(DESKTOP);
});
