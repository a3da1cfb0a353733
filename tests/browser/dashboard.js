// Loads a node's dashboard in headless Chromium and prints what it shows as one
// JSON object: the node ids of the node table, each shard's leader cell, the rate
// shown, and every console error or uncaught exception of the page.
//
// Usage: node dashboard.js URL [SCREENSHOT.png]
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on("console", (message) => {
      if (message.type() === "error") {
        errors.push(message.text());
      }
    });
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(url);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });
    // Two refreshes give a rate; three draw a line.
    await page.waitForFunction(
      () => document.getElementById("sparkline").getAttribute("points").split(" ").filter(Boolean).length >= 2,
      null,
      { timeout: 20000 },
    );
    const shown = await page.evaluate(() => ({
      nodes: [...document.querySelectorAll("#nodes tbody tr")].map((row) => Number(row.dataset.node)),
      shards: [...document.querySelectorAll("#shards tbody tr")].map((row) => ({
        shard: Number(row.dataset.shard),
        leader: row.querySelector("td.leader").textContent,
      })),
      rate: document.getElementById("rate-value").textContent,
      title: document.title,
    }));
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
    }
    process.stdout.write(JSON.stringify({ ...shown, errors }) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
