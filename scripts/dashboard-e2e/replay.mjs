// Opens the dashboard's dead letters in headless Chromium, follows the one
// of `type`, replays it with the token, and reads the confirmation back.
// Usage: node replay.mjs <dashboard url> <event type> <token>
// Prints one JSON object of what the pages showed; exits 1 on any failure.
import { chromium } from "playwright-core";

const [base, type, token] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  const overview = (await page.textContent("#dead-letter-count")).trim();
  await page.click("text=dead letters");
  await page.fill("input[name=type]", type);
  await page.click("button:has-text('filter')");
  const count = (await page.textContent("#count")).trim();
  const link = page.locator("#dead-letters a").first();
  const id = (await link.textContent()).trim();
  await link.click();
  const error = (await page.textContent("#error")).trim();
  const payload = JSON.parse(await page.textContent("#payload"));
  await page.fill("input[name=token]", token);
  await page.click("#replay");
  await page.waitForSelector("#flash");
  const flash = (await page.textContent("#flash")).trim();
  const after = (await page.textContent("#count")).trim();
  console.log(JSON.stringify({ overview, count, id, error, payload, flash, after, url: page.url() }));
} catch (e) {
  console.error(`the dashboard did not behave: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
