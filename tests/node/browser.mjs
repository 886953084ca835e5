// Opens the demo page in Debian's headless Chromium (never a downloaded browser) and prints
// what the page saw as one JSON line; run by tests/test_proxy_browser.py.
// usage: node browser.mjs PAGE_URL USER_DATA_DIR
import { chromium } from "playwright-core";

const [pageUrl, userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await context.newPage();
  const console_ = [];
  page.on("console", (message) => console_.push(message.text()));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.done === true, null, { timeout: 60000 });
  const results = await page.evaluate(() => window.results);
  const video = await page.textContent("#video");
  const refusal = await page.textContent("#refusal");
  console.log(JSON.stringify({ results, video, refusal, console: console_ }));
} finally {
  await context.close();
}
