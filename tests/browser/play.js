'use strict';
// play.js drives Debian's Chromium through the relay's page as a person
// would: log in, press Watch on a camera, and check that its <video> shows
// pictures (videoWidth > 0) and that its currentTime keeps advancing.
// It prints one JSON line with what it saw and exits 0, or prints the
// failure and exits 1. A screenshot is written either way.
//
// Environment: WEB_URL (the page), VIEWER_USER, VIEWER_PASSWORD, CAMERA,
// SCREENSHOT (a .png path), PLAY_SECONDS (seconds of video currentTime must
// advance by, default 5), CHROMIUM (default /usr/bin/chromium). It never downloads a
// browser: playwright-core has none.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const env = (name, def) => {
  const v = process.env[name] ?? def;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

async function main() {
  const url = env('WEB_URL');
  const camera = env('CAMERA');
  const shot = env('SCREENSHOT');
  const samples = Number(env('PLAY_SECONDS', '5'));
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    ignoreHTTPSErrors: true, // the test relay's certificate comes from a test CA
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The relay listens on 127.0.0.1 only; Chromium leaves loopback out
      // of WebRTC unless told.
      '--allow-loopback-in-peer-connection',
    ],
  });
  const page = context.pages()[0] || await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  try {
    await page.goto(url);
    // A mistyped password first: the page says so.
    await page.fill('#login input[name=user]', env('VIEWER_USER'));
    await page.fill('#login input[name=password]', 'not the password');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#login-error').textContent.includes('wrong'), null, { timeout: 20000 });
    await page.fill('#login input[name=user]', env('VIEWER_USER'));
    await page.fill('#login input[name=password]', env('VIEWER_PASSWORD'));
    await page.click('#login button[type=submit]');
    const card = page.locator(`article[data-camera="${camera}"]`);
    await card.waitFor({ timeout: 20000 });
    await card.locator('button.play').click();
    const video = card.locator('video');
    // Pictures: the decoder has produced a frame.
    await page.waitForFunction((el) => el.videoWidth > 0, await video.elementHandle(), { timeout: 60000, polling: 100 });
    // Playing: currentTime advances by PLAY_SECONDS seconds of video, never
    // going back. The deadline is generous (a loaded machine may stall the
    // player for a moment); the verdict is the progress, not its speed.
    const times = [await video.evaluate((el) => el.currentTime)];
    const deadline = Date.now() + 120000;
    while (times[times.length - 1] < times[0] + samples && Date.now() < deadline) {
      await page.waitForTimeout(1000);
      times.push(await video.evaluate((el) => el.currentTime));
    }
    const seen = await video.evaluate((el) => ({ width: el.videoWidth, height: el.videoHeight, paused: el.paused }));
    const state = (await card.locator('.state').textContent()).trim();
    const viewers = (await card.locator('.viewers').textContent()).trim();
    await page.screenshot({ path: shot, fullPage: true });
    const advancing = times[times.length - 1] >= times[0] + samples && times.every((t, i) => i === 0 || t >= times[i - 1]);
    const result = { ...seen, times, state, viewers, screenshot: shot, log };
    console.log(JSON.stringify(result));
    // A person presses Stop: the page hangs up (DELETE on the session).
    await card.locator('button.stop').click();
    await page.waitForFunction((el) => el.dataset.state === 'idle', await card.elementHandle(), { timeout: 10000 });
    if (!advancing) throw new Error(`currentTime did not advance by ${samples} s without going back: ${times.join(', ')}`);
    if (state !== 'live') throw new Error(`the page says "${state}", want "live"`);
  } catch (err) {
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`play.js: ${err.message}\n${log.join('\n')}`);
    process.exitCode = 1;
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`play.js: ${err.stack || err}`);
  process.exit(1);
});
