// Browser tests of the live pages in Debian's chromium, driven by playwright-core.
// Usage: node pages.mjs <base url> <root token> <screenshot dir>
// Run by `cargo test` (tests/api/browser.rs) against the real server.
// Every wait is 10 s: CI runs this beside all the API tests on 2 cores, and a shorter
// wait failed there under load. Latency is reported (e.g. "payment shown N ms"), and the
// latency targets are proven by the loadtest crate, not here.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { randomUUID } from "node:crypto";

const [base, root, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

async function api(token, method, path, body, key) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
  const res = await fetch(`${base}/api/v1${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return json;
}

// A PNG of `width`×`height` painted in the browser: a gradient of two colours, and a word.
async function paint(context, width, height, [from, to], text, size, x, y) {
  const painter = await context.newPage();
  const png = await painter.evaluate(async ({ width, height, from, to, text, size, x, y }) => {
    const c = Object.assign(document.createElement("canvas"), { width, height });
    const g = c.getContext("2d");
    const fill = g.createLinearGradient(0, 0, width, height);
    fill.addColorStop(0, from);
    fill.addColorStop(1, to);
    g.fillStyle = fill;
    g.fillRect(0, 0, width, height);
    g.fillStyle = "#fff";
    g.font = `bold ${size}px sans-serif`;
    g.fillText(text, x, y);
    const blob = await new Promise((ok) => c.toBlob(ok, "image/png"));
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  }, { width, height, from, to, text, size, x, y });
  await painter.close();
  return png;
}

// PUT an image; the answer's JSON.
async function upload(token, path, png) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "image/png" },
    body: new Uint8Array(png),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `PUT ${path}: ${text}`);
  return JSON.parse(text);
}

// A tenant with a canteen, one of its stalls, a till and a cardholder with money.
const tenant = await api(root, "POST", "/tenants", { name: "Riverside University", kind: "university", edition: "standard" });
const admin = tenant.admin_token;
await api(admin, "PATCH", "/tenant", { settings: { require_agreement: false } });
const hall = await api(admin, "POST", "/merchants", { name: "North Hall" });
const stall = await api(admin, "POST", "/merchants", { name: "Noodles", parent_id: hall.id });
await api(admin, "POST", "/merchants", { name: "Coffee", parent_id: hall.id });
const till = await api(admin, "POST", `/merchants/${stall.id}/terminals`, { name: "Till 1" });
const user = await api(admin, "POST", "/users", { name: "Li Xiaoming", number: "S2026001" });
const card = (await api(admin, "POST", `/users/${user.id}/tokens`, {})).token;
await api(admin, "POST", `/users/${user.id}/wallet/topups`, { amount: 10_000 }, randomUUID());
const pay = async (code, amount) =>
  api(till.token, "POST", "/payments", { code, amount }, randomUUID());
const freshCode = async () => (await api(card, "POST", "/me/payment-codes", {})).code;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const results = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });

  // /screen: a payment shows, green; a declined one red with its reason.
  {
    const page = await context.newPage();
    await page.goto(`${base}/screen#token=${till.token}`);
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    const code = await freshCode();
    const started = Date.now();
    const p = await pay(code, 1250);
    await page.waitForSelector(`[data-testid=receipt][data-payment="${p.id}"]`, { timeout: 10_000 });
    const shownMs = Date.now() - started;
    const receipt = page.locator("[data-testid=receipt]");
    assert.match(await receipt.getAttribute("class"), /\bok\b/);
    const text = await receipt.innerText();
    assert.ok(text.includes("¥12.50") && text.includes("Paid"), text);
    await page.waitForFunction(() => document.getElementById("holder").textContent.length > 0);
    assert.equal(await page.locator("#holder").innerText(), "L* X*******");
    await page.screenshot({ path: `${shots}/screen.png` });
    const declined = await pay(code, 300);
    assert.equal(declined.decline_reason, "code_reused");
    await page.waitForSelector(`[data-testid=receipt][data-payment="${declined.id}"]`, { timeout: 10_000 });
    assert.match(await receipt.getAttribute("class"), /\bbad\b/);
    assert.ok((await receipt.innerText()).includes("Code already used"));
    results.push(`screen: payment shown ${shownMs} ms after the request was sent`);
    await page.close();
  }

  // /dashboard: the counter and the feed move when a payment lands.
  {
    const page = await context.newPage();
    await page.goto(`${base}/dashboard#token=${admin}`);
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    const count = page.locator("[data-testid=count]");
    const before = Number(await count.innerText());
    assert.equal(before, 1, "one payment so far today");
    for (const amount of [800, 1500, 650]) await pay(await freshCode(), amount);
    await page.waitForFunction((n) => Number(document.querySelector("[data-testid=count]").textContent) === n,
      before + 3, { timeout: 10_000 });
    assert.equal(await page.locator("[data-testid=feed] li").count(), 3);
    assert.ok((await page.locator("#tree").innerText()).includes("Noodles"));
    // A notice: one person reached by text, one with no phone on file; the panel shows
    // the notice within its refresh and its deliveries as they finish.
    const reader = await api(admin, "POST", "/users", { name: "Zhao Lei", number: "N2026001", phone: "13500000001" });
    const notice = await api(admin, "POST", "/notices", {
      title: "Library closed Friday", body: "Inventory day.",
      audience: { user_ids: [user.id, reader.id] },
    });
    const row = page.locator(`[data-notice="${notice.id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await page.waitForFunction((id) => {
      const li = document.querySelector(`[data-notice="${id}"]`);
      return li && li.dataset.status === "sent";
    }, notice.id, { timeout: 10_000 });
    const shown = await row.innerText();
    assert.ok(shown.includes("1 sent") && shown.includes("1 failed"), shown);
    await page.waitForTimeout(600); // let the chart draw its bars
    await page.screenshot({ path: `${shots}/dashboard.png` });
    results.push(`dashboard: counter ${before} -> ${before + 3}; notice ${shown.replace(/\s+/g, " ")}`);
    await page.close();
  }

  // /dashboard for a tenant group's admin: the members panel links to each member's own
  // dashboard, which then counts that member's payments live.
  {
    const district = await api(root, "POST", "/tenants", { name: "East District Bureau", kind: "k12", edition: "advanced" });
    const group = await api(root, "POST", "/tenant-groups", { name: "East District", head_tenant_id: district.id });
    const joined = await fetch(`${base}/api/v1/tenant-groups/${group.id}/tenants/${tenant.id}`,
      { method: "PUT", headers: { Authorization: `Bearer ${root}` } });
    assert.equal(joined.status, 201);
    const page = await context.newPage();
    await page.goto(`${base}/dashboard#token=${district.admin_token}`);
    const link = page.locator(`[data-member="${tenant.id}"]`);
    await link.waitFor({ timeout: 10_000 });
    assert.equal(await link.innerText(), "Riverside University");
    await link.click();
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    await page.waitForFunction(() => document.getElementById("who").textContent.includes("group"),
      null, { timeout: 10_000 });
    assert.equal(await page.locator("#who").innerText(), "Riverside University · as its group's admin");
    const count = page.locator("[data-testid=count]");
    await page.waitForFunction(() => Number(document.querySelector("[data-testid=count]").textContent) > 0,
      null, { timeout: 10_000 });
    const before = Number(await count.innerText());
    // Another cardholder pays (by deferred debit), so that the first card's balance stays
    // what the later scenarios expect.
    const other = await api(admin, "POST", "/users", { name: "Qian Feng", number: "S2026077" });
    const otherCard = (await api(admin, "POST", `/users/${other.id}/tokens`, {})).token;
    await api(otherCard, "POST", "/me/agreement", {});
    const paid = await pay((await api(otherCard, "POST", "/me/payment-codes", {})).code, 420);
    assert.ok(!paid.decline_reason, JSON.stringify(paid));
    await page.waitForFunction((n) => Number(document.querySelector("[data-testid=count]").textContent) === n,
      before + 1, { timeout: 10_000 });
    results.push(`group dashboard: the bureau opened Riverside's dashboard from its members panel; counter ${before} -> ${before + 1}`);
    await page.close();
  }

  // /event-screen: the door's code and QR; a check-in and a refusal appear as they happen.
  {
    const start = new Date(Date.now() - 60_000).toISOString();
    const end = new Date(Date.now() + 2 * 3600_000).toISOString();
    const ev = await api(admin, "POST", "/events",
      { name: "Freshers' orientation", starts_at: start, ends_at: end, designated: true });
    await api(admin, "POST", `/events/${ev.id}/attendees`, { user_ids: [user.id] });
    const page = await context.newPage();
    await page.goto(`${base}/event-screen?event=${ev.id}#token=${admin}`);
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    assert.equal((await page.locator("[data-testid=code]").innerText()).replace("-", ""), ev.code);
    assert.equal(await page.locator("#qr svg").count(), 1, "a QR image");
    const started = Date.now();
    await api(card, "POST", "/check-ins", { code: ev.code });
    await page.waitForFunction(() => document.querySelector("[data-testid=count]").textContent === "1",
      null, { timeout: 10_000 });
    const shownMs = Date.now() - started;
    const other = await api(admin, "POST", "/users", { name: "Zhao Lei", number: "S2026009" });
    const otherCard = (await api(admin, "POST", `/users/${other.id}/tokens`, {})).token;
    const refused = await fetch(`${base}/api/v1/check-ins`, {
      method: "POST",
      headers: { Authorization: `Bearer ${otherCard}`, "Content-Type": "application/json" },
      body: JSON.stringify({ code: ev.code }),
    });
    assert.equal(refused.status, 403);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=feed] li").length === 2,
      null, { timeout: 10_000 });
    const feed = await page.locator("[data-testid=feed]").innerText();
    assert.ok(feed.includes("Li Xiaoming · S2026001") && feed.includes("Zhao Lei · S2026009: not on the list"), feed);
    await page.screenshot({ path: `${shots}/event.png` });
    results.push(`event-screen: check-in shown ${shownMs} ms after the request was sent; refusal shown`);
    await page.close();
  }

  // /me: the QR changes after a minute of (the page's injected) time; a scan is noticed.
  {
    const page = await context.newPage();
    await page.setViewportSize({ width: 480, height: 960 });
    await page.clock.install();
    await page.goto(`${base}/me#token=${card}`);
    await page.waitForSelector("[data-testid=qr][data-code]", { timeout: 10_000 });
    const first = await page.locator("[data-testid=qr]").getAttribute("data-code");
    assert.ok((await page.locator("[data-testid=qr] svg").count()) === 1, "a QR image");
    await page.clock.runFor(30_000);
    assert.equal(await page.locator("[data-testid=qr]").getAttribute("data-code"), first, "not before a minute");
    await page.clock.runFor(31_000);
    await page.waitForFunction((old) => {
      const el = document.querySelector("[data-testid=qr]");
      return el.dataset.code && el.dataset.code !== old;
    }, first, { timeout: 10_000 });
    const second = await page.locator("[data-testid=qr]").getAttribute("data-code");
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    await pay(second, 420);
    await page.waitForSelector("[data-testid=notice]:not(.hidden)", { timeout: 10_000 });
    assert.ok((await page.locator("[data-testid=notice]").innerText()).includes("just scanned"));
    await page.waitForFunction(() => document.querySelector("[data-testid=balance]").textContent === "¥53.80",
      null, { timeout: 10_000 });
    // The statement puts the payment first, with what paid for it; the top-up is below.
    await page.waitForFunction(() => {
      const first = document.querySelector("[data-testid=statement] li[data-kind]");
      return first && first.dataset.kind === "payment" && first.textContent.includes("−¥4.20");
    }, null, { timeout: 10_000 });
    const statement = await page.locator("[data-testid=statement]").innerText();
    assert.ok(statement.includes("balance ¥4.20") && statement.includes("Top-up"), statement);
    await page.screenshot({ path: `${shots}/me.png`, fullPage: true });
    results.push("me: QR changed after 60 s of page time; scan notice shown; the statement lists the payment");
    await page.close();
  }

  // /me in arrears: the banner shows what is owed; its button repays it.
  {
    const debtor = await api(admin, "POST", "/users", { name: "Wang Fang", number: "S2026002" });
    const tok = (await api(admin, "POST", `/users/${debtor.id}/tokens`, {})).token;
    await api(tok, "POST", "/me/agreement", {});
    await api(admin, "PUT", `/sandbox/provider/users/${debtor.id}`, { available: 100 });
    const code = (await api(tok, "POST", "/me/payment-codes", {})).code;
    const p = await pay(code, 300);
    assert.equal(p.status, "accepted");
    for (let i = 0; ; i++) {
      const now = await api(admin, "GET", `/payments/${p.id}`);
      if (now.status === "unsettled") break;
      assert.ok(i < 100, `still ${now.status}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await api(admin, "POST", `/users/${debtor.id}/wallet/topups`, { amount: 1_000 }, randomUUID());
    const page = await context.newPage();
    await page.setViewportSize({ width: 480, height: 960 });
    await page.goto(`${base}/me#token=${tok}`);
    const banner = page.locator("[data-testid=arrears]");
    await banner.waitFor({ state: "visible", timeout: 10_000 });
    assert.ok((await banner.innerText()).includes("¥3.00"));
    await page.screenshot({ path: `${shots}/me-arrears.png` });
    await page.waitForSelector("#status.live", { timeout: 10_000 });
    await page.click("#repay");
    await banner.waitFor({ state: "hidden", timeout: 10_000 });
    // The repayment's events (the old payment, now succeeded, then arrears.repaid) are no
    // scan: no "just scanned" once both have arrived.
    await page.waitForSelector("#main[data-last-event='arrears.repaid']", { timeout: 10_000 });
    assert.ok(await page.locator("[data-testid=notice]").evaluate((n) => n.classList.contains("hidden")),
      `a repayment is not announced as a scan: ${await page.locator("[data-testid=notice]").innerText()}`);
    // Repayment is a payment of its own (through the provider), not from the balance.
    assert.equal(await page.locator("[data-testid=balance]").innerText(), "¥10.00");
    await page.waitForSelector("[data-testid=statement] li[data-kind=arrears_repaid]", { timeout: 10_000 });
    assert.ok((await page.locator("[data-testid=statement] li[data-kind=arrears_opened]").innerText()).includes("¥3.00"));
    assert.equal((await api(admin, "GET", `/users/${debtor.id}/arrears`)).arrears, 0);
    results.push("me: arrears banner shown and repaid with its button");
    await page.close();
  }

  // /me: topping up online through the sandbox provider: a bad amount is refused on the
  // page, then the order, its payment in the "provider's app", and the credit.
  {
    await api(admin, "PATCH", "/tenant", { settings: { online_topups: { enabled: true, min: 100, max: 50_000 } } });
    const start = (await api(card, "GET", "/me/wallet")).balance;
    const page = await context.newPage();
    await page.setViewportSize({ width: 480, height: 960 });
    await page.goto(`${base}/me#token=${card}`);
    await page.waitForSelector("[data-testid=topup]:not(.hidden)", { timeout: 10_000 });
    await page.fill("#topup-amount", "0.5");
    await page.click("#topup-go");
    assert.equal(await page.locator("[data-testid=topup-state]").innerText(), "Enter ¥1.00 to ¥500.00.");
    await page.fill("#topup-amount", "25");
    await page.click("#topup-go");
    await page.waitForSelector("#sandbox-pay", { timeout: 10_000 });
    assert.equal((await api(card, "GET", "/me/wallet")).balance, start, "nothing credited before it is paid");
    await page.click("#sandbox-pay");
    await page.waitForSelector("[data-testid=topup][data-status=paid]", { timeout: 15_000 });
    assert.equal(await page.locator("[data-testid=topup-state]").innerText(), "¥25.00 credited.");
    const total = start + 2_500;
    const want = `¥${Math.floor(total / 100)}.${String(total % 100).padStart(2, "0")}`;
    await page.waitForFunction((w) => document.querySelector("[data-testid=balance]").textContent === w,
      want, { timeout: 10_000 });
    const line = page.locator("[data-testid=statement] li[data-kind=top_up]").first();
    assert.ok((await line.innerText()).includes("SBX"), await line.innerText());
    const mine = await api(card, "GET", "/me/wallet/charges");
    assert.equal(mine.items.filter((c) => c.status === "paid").length, 1, JSON.stringify(mine));
    await page.screenshot({ path: `${shots}/me-topup.png` });
    results.push("me: topped up ¥25.00 online through the sandbox, credited once");
    await page.close();
  }

  // /pay: the phone opens a collection code's address, sees whom it pays, enters an amount
  // and pays; the code's screen shows the payment. A count-only code counts once.
  {
    const window2 = await api(admin, "POST", `/merchants/${stall.id}/terminals`,
      { name: "Window 2", kind: "collection", mode: "pay" });
    assert.ok(window2.collection.pay_url.startsWith(`${base}/pay?code=`), window2.collection.pay_url);
    const screen = await context.newPage();
    await screen.goto(`${base}/screen#token=${window2.token}`);
    await screen.waitForSelector("#status.live", { timeout: 10_000 });
    const page = await context.newPage();
    await page.setViewportSize({ width: 420, height: 860 });
    await page.goto(`${window2.collection.pay_url}#token=${card}`);
    await page.waitForFunction(() => document.querySelector("[data-testid=payee]").textContent === "Noodles",
      null, { timeout: 10_000 });
    await page.fill("#amount", "twelve");
    await page.click("#go");
    assert.equal(await page.locator("#problem").innerText(), "Enter an amount, like 12.50");
    await page.fill("#amount", "12.5");
    await page.click("#go");
    await page.waitForSelector("[data-testid=done][data-state=succeeded]", { timeout: 10_000 });
    assert.equal(await page.locator("#paid").innerText(), "¥12.50");
    await screen.waitForSelector("[data-testid=receipt][data-status=succeeded]", { timeout: 10_000 });
    assert.equal(await screen.locator("#amount").innerText(), "¥12.50");
    await page.screenshot({ path: `${shots}/pay.png` });
    const payments = await api(admin, "GET", `/payments?merchant_id=${stall.id}`);
    assert.equal(payments.items.filter((p) => p.terminal_id === window2.id).length, 1, "paid once");

    const door = await api(admin, "POST", `/merchants/${hall.id}/terminals`,
      { name: "Main door", kind: "collection", mode: "count" });
    await page.goto(`${base}/pay?code=${door.collection.code.toLowerCase()}`);
    await page.waitForFunction(() => document.querySelector("[data-testid=payee]").textContent === "North Hall",
      null, { timeout: 10_000 });
    await page.click("#go");
    await page.waitForSelector("[data-testid=done][data-state=counted]", { timeout: 10_000 });
    await page.reload();
    await page.waitForSelector("#go:visible", { timeout: 10_000 });
    await page.click("#go");
    await page.waitForSelector("[data-testid=done][data-state=repeat]", { timeout: 10_000 });
    const day = await api(admin, "GET", `/merchants/${hall.id}/visits`);
    assert.equal(day.count, 1, JSON.stringify(day));
    results.push("pay: paid ¥12.50 at a collection code, shown on its screen; a visit counted once");
    await screen.close();
    await page.close();
  }

  // /verify: a bus's phone opens its binding link and verifies riders' codes, typed as a
  // scanner types them; the rider's /me shows the ride code and hears the boarding.
  {
    const east = await api(admin, "POST", "/shuttle/routes", { name: "East gate" });
    const bus = await api(admin, "POST", "/shuttle/buses", { route_id: east.id, name: "Bus 3" });
    const binding = await api(admin, "POST", `/shuttle/buses/${bus.id}/binding`, {});
    assert.ok(binding.binding_url.startsWith(`${base}/verify#`), binding.binding_url);
    const phones = await browser.newContext({ viewport: { width: 412, height: 860 } });
    const phone = await phones.newPage();
    await phone.goto(binding.binding_url);
    await phone.waitForFunction(() => document.querySelector("[data-testid=subject]").textContent === "Bus 3",
      null, { timeout: 10_000 });
    assert.equal(await phone.locator("[data-testid=route]").innerText(), "East gate");
    assert.ok(!phone.url().includes("#"), "the binding token leaves the address bar");

    const card_page = await context.newPage();
    await card_page.goto(`${base}/me#token=${card}`);
    await card_page.waitForSelector("#status.live", { timeout: 10_000 });
    await card_page.click("#mode-ride");
    await card_page.waitForSelector("[data-testid=qr][data-mode=ride]", { timeout: 10_000 });
    const code = await card_page.locator("[data-testid=qr]").getAttribute("data-code");

    const scan = async (text, state) => {
      await phone.fill("#code", text);
      await phone.press("#code", "Enter");
      await phone.waitForSelector(`[data-testid=result][data-state=${state}]`, { timeout: 10_000 });
    };
    await scan(code, "boarded");
    assert.match(await phone.locator("#rider").innerText(), /Li Xiaoming · S2026001/);
    assert.equal(await phone.locator("[data-testid=boarded]").innerText(), "1");
    await card_page.waitForFunction(
      () => document.querySelector("[data-testid=notice]").textContent.startsWith("Boarded Bus 3 (East gate)"),
      null, { timeout: 10_000 });
    await phone.screenshot({ path: `${shots}/verify.png` });
    await scan(code, "repeat");
    await scan(await freshCode(), "personal_code_invalid");
    assert.equal(await phone.locator("#state").innerText(), "Not a personal code");
    assert.equal(await phone.locator("[data-testid=boarded]").innerText(), "1");
    const rides = await api(admin, "GET", `/shuttle/rides?bus_id=${bus.id}`);
    assert.equal(rides.items.length, 1, JSON.stringify(rides));
    results.push("verify: a phone bound by its link boarded a rider once, refused a payment code; /me heard it");

    // The same page as a device's fixed scanner: it records a maintenance visit.
    const lifts = await api(admin, "POST", "/maintenance/device-types", { name: "Lift" });
    const liftB = await api(admin, "POST", "/maintenance/devices",
      { type_id: lifts.id, name: "Lift B", location: "Library" });
    const link = await api(admin, "POST", `/maintenance/devices/${liftB.id}/binding`, {});
    const kiosk = await phones.newPage();
    await kiosk.goto(link.binding_url);
    await kiosk.waitForFunction(() => document.querySelector("[data-testid=subject]").textContent === "Lift B",
      null, { timeout: 10_000 });
    assert.equal(await kiosk.locator("[data-testid=route]").innerText(), "Library · Lift");
    const personal = (await api(card, "POST", "/me/personal-codes", {})).code;
    await kiosk.fill("#code", personal);
    await kiosk.press("#code", "Enter");
    await kiosk.waitForSelector("[data-testid=result][data-state=boarded]", { timeout: 10_000 });
    assert.equal(await kiosk.locator("#state").innerText(), "Recorded");
    const visits = await api(admin, "GET", `/maintenance/records?device_id=${liftB.id}`);
    assert.equal(visits.items.length, 1, JSON.stringify(visits));
    assert.equal(visits.items[0].method, "fixed_scanner");
    results.push("verify: the same page as a device's fixed scanner recorded a maintenance visit");
    await card_page.close();
    await phones.close();
  }

  // /visit: a visitor asks from the tenant's public link; the host approves on /me; the
  // visitor's page shows the gate's QR code; staff let them in at /verify?app=visitors.
  {
    const phones = await browser.newContext({ viewport: { width: 412, height: 900 } });
    const visitor = await phones.newPage();
    await visitor.goto(`${base}/visit?tenant=${tenant.id}`);
    await visitor.waitForSelector("[data-testid=ask]:visible", { timeout: 10_000 });
    assert.equal(await visitor.locator("#title").innerText(), "Riverside University");
    assert.ok(await visitor.locator("#id_number").isHidden(), "no real-name check by default");
    await visitor.fill("#name", "Wang Fang");
    await visitor.fill("#host_name", "Li Xiaoming");
    await visitor.fill("#host_number", "S2026001");
    await visitor.fill("#plate", "沪A·12345");
    await visitor.click("#send");
    await visitor.waitForSelector("#problem:has-text('phone')", { timeout: 10_000 });
    await visitor.fill("#phone", "138 0000 0000");
    // The visit starts in ten minutes, in the browser's own time.
    const [soon, later] = await visitor.evaluate(() => [10, 130].map((mins) => {
      const d = new Date(Date.now() + mins * 60_000);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    }));
    await visitor.fill("#starts", soon);
    await visitor.fill("#ends", later);
    await visitor.click("#send");
    await visitor.waitForSelector("[data-testid=pass][data-status=pending]", { timeout: 10_000 });

    const host = await context.newPage();
    await host.goto(`${base}/me#token=${card}`);
    await host.waitForSelector("[data-testid=visitors] [data-do=approve]", { timeout: 10_000 });
    await host.click("[data-testid=visitors] [data-do=approve]");
    await host.waitForSelector("[data-testid=visitors]:not(:visible)", { state: "attached", timeout: 10_000 });

    await visitor.reload();
    await visitor.waitForSelector("[data-testid=pass][data-status=approved]", { timeout: 10_000 });
    assert.ok(await visitor.locator("[data-testid=qr] svg").isVisible(), "the gate's QR code");
    await visitor.screenshot({ path: `${shots}/visit.png` });
    const passText = await visitor.evaluate(() => localStorage.getItem("onecard.visit.pass"));

    const gate = await phones.newPage();
    await gate.goto(`${base}/verify?app=visitors#token=${admin}`);
    await gate.waitForFunction(() => document.querySelector("[data-testid=subject]").textContent === "Visitor gate",
      null, { timeout: 10_000 });
    await gate.fill("#code", `onecard:visit:${passText}`);
    await gate.press("#code", "Enter");
    await gate.waitForSelector("[data-testid=result][data-state=boarded]", { timeout: 10_000 });
    assert.equal(await gate.locator("#state").innerText(), "Let in");
    assert.match(await gate.locator("#rider").innerText(), /Wang Fang → Li Xiaoming · 沪A12345/);
    await host.waitForFunction(
      () => document.querySelector("[data-testid=notice]").textContent === "Your visitor Wang Fang has come in.",
      null, { timeout: 10_000 });
    await gate.fill("#code", passText);
    await gate.press("#code", "Enter");
    await gate.waitForSelector("[data-testid=result][data-state=repeat]", { timeout: 10_000 });
    results.push("visit: asked from the public link, approved on /me, let in once at the gate");
    await host.close();
    await phones.close();
  }

  // /claim: the operator approves a staff card with its cover; a teacher claims it from the
  // tenant's link with a code texted to their imported phone, and /me opens with it.
  {
    const teacher = await api(admin, "POST", "/identity-types",
      { name: "teacher", category: "teacher", verification: "phone" });
    await api(admin, "POST", "/users",
      { name: "Zhang Wei", number: "T2026001", identity: "teacher", phone: "13800138000" });
    let staffCard = await api(admin, "POST", "/cards", {
      title: "Riverside staff card", subtitle: "staff_card",
      identity_type_ids: [teacher.id], claim_mode: "open_link",
    });
    const cover = await paint(context, 1000, 600, ["#0b5cad", "#12a37f"], "Riverside University", 72, 60, 300);
    staffCard = await upload(admin, `/cards/${staffCard.id}/cover`, cover);
    await api(root, "POST", `/card-reviews/${staffCard.id}/approve`, { revision: staffCard.revision });

    const phones = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const claimer = await phones.newPage();
    await claimer.goto(`${base}/claim?tenant=${tenant.id}`);
    await claimer.waitForSelector("[data-testid=claim]:visible", { timeout: 10_000 });
    assert.ok(await claimer.locator(".card-tile img").isVisible(), "the cover is shown");
    assert.ok(await claimer.locator("#id_number").isHidden(), "the phone method asks no ID");
    await claimer.fill("#phone", "138 0013 8000");
    await claimer.click("#send-code");
    await claimer.waitForSelector("#sent:has-text('on its way')", { timeout: 10_000 });
    const texts = await api(admin, "GET", "/sandbox/texts?phone=13800138000");
    await claimer.fill("#phone_code", texts.items[0].body.slice(0, 6));
    await claimer.screenshot({ path: `${shots}/claim.png` });
    await claimer.click("#claim");
    await claimer.waitForSelector("[data-testid=done]:visible", { timeout: 10_000 });
    assert.match(await claimer.locator("#holder").innerText(), /Riverside staff card · Zhang Wei \(T2026001\)/);
    // This tenant asks for the deferred-debit agreement from now on (the last scenario).
    await api(admin, "PATCH", "/tenant", { settings: { require_agreement: true } });
    await claimer.click("#open");
    await claimer.waitForFunction(() => document.getElementById("who").textContent === "Zhang Wei",
      null, { timeout: 10_000 });
    // A card just claimed has no agreement yet: /me offers it, and then shows the code.
    await claimer.waitForSelector("[data-testid=agreement]:visible", { timeout: 10_000 });
    await claimer.click("#sign");
    await claimer.waitForSelector("[data-testid=qr] svg", { timeout: 10_000 });
    assert.ok(await claimer.locator("[data-testid=agreement]").isHidden());
    results.push("claim: a teacher claimed an approved card by a texted code; /me opened with it, and offered the agreement before the code");

    // /bind: Li Xiaoming is named super admin. Opened on Zhang Wei's phone (his card is
    // kept there) the link is refused and stays unused; on Li's own browser it binds.
    const named = await api(admin, "POST", "/admins", { user_id: user.id, role: "super_admin" });
    assert.ok(named.binding_qr_svg.startsWith("<?xml") || named.binding_qr_svg.includes("<svg"));
    const link = new URL(named.binding_url);
    const wrong = await phones.newPage();
    await wrong.goto(`${base}${link.pathname}${link.hash}`);
    await wrong.click("[data-testid=bind]");
    await wrong.waitForSelector("#problem:has-text('names someone else')", { timeout: 10_000 });
    assert.equal(new URL(wrong.url()).hash, "", "the binding token left the address bar");
    const own = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const right = await own.newPage();
    await right.goto(`${base}${link.pathname}${link.hash}`);
    await right.click("[data-testid=bind]");
    await right.waitForSelector("[data-testid=done]:visible", { timeout: 10_000 });
    await right.waitForFunction(() => document.getElementById("who").textContent.includes("Riverside"),
      null, { timeout: 10_000 });
    assert.equal(await right.locator("#who").innerText(), "Super admin of Riverside University");
    const bound = await right.locator("[data-testid=token]").innerText();
    assert.equal((await api(bound, "GET", "/admins/me")).role, "super_admin");
    await right.click("#open");
    await right.waitForSelector("#status.live", { timeout: 10_000 });
    results.push("bind: a binding opened with another person's card was refused; its own person bound and reached the dashboard");
    await own.close();
    await phones.close();
  }

  // /me, global identity: Chen Jing teaches at two schools of a district. Her North card
  // shows a link code; her South card (another phone) redeems it; both list the two
  // schools, and from the South phone she opens her North card, which moves there.
  {
    const north = await api(root, "POST", "/tenants", { name: "North Middle School", kind: "k12", edition: "advanced" });
    const south = await api(root, "POST", "/tenants", { name: "South Middle School", kind: "k12", edition: "advanced" });
    const district = await api(root, "POST", "/tenant-groups", { name: "East District", head_tenant_id: north.id });
    await api(root, "PUT", `/tenant-groups/${district.id}/tenants/${south.id}`);
    const cardOf = async (t) => {
      const u = await api(t.admin_token, "POST", "/users", { name: "Chen Jing", number: "T88" });
      return (await api(t.admin_token, "POST", `/users/${u.id}/tokens`, {})).token;
    };
    const [northCard, southCard] = [await cardOf(north), await cardOf(south)];
    const phoneA = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const phoneB = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const a = await phoneA.newPage();
    await a.goto(`${base}/me#token=${northCard}`);
    await a.waitForSelector("[data-testid=schools]:visible", { timeout: 10_000 });
    await a.click("#link summary");
    await a.click("#make-code");
    await a.waitForFunction(() => document.getElementById("link-code").textContent.length > 20,
      null, { timeout: 10_000 });
    const linkCode = await a.locator("[data-testid=link-code]").innerText();
    const b = await phoneB.newPage();
    await b.goto(`${base}/me#token=${southCard}`);
    await b.waitForSelector("[data-testid=schools]:visible", { timeout: 10_000 });
    await b.click("#link summary");
    await b.fill("#code-in", linkCode);
    await b.click("#redeem button");
    await b.waitForSelector(`#school-list li[data-tenant="${north.id}"]`, { timeout: 10_000 });
    await b.screenshot({ path: `${shots}/me-schools.png` });
    await a.reload();
    await a.waitForSelector(`#school-list li[data-tenant="${south.id}"]`, { timeout: 10_000 });
    await b.click(`#school-list li[data-tenant="${north.id}"] [data-do=open]`);
    await b.waitForSelector(`#school-list li[data-tenant="${north.id}"]:has-text('this card')`,
      { timeout: 10_000 });
    const old = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${northCard}` } });
    assert.equal(old.status, 401, "the North card left phone A");
    results.push("me: two schools' cards linked by a code shown on one and entered on the other; the North card opened from the South phone");
    // /launch: the card lists its apps; one opens through its own link, which goes on to
    // the app's page for the card on this phone with a one-time ticket (its server
    // redeems it; tests/api/apps.rs).
    const h5 = await api(north.admin_token, "POST", "/apps",
      { name: "Library", kind: "h5", scopes: ["launch"], entry_url: `${base}/healthz?from=card` });
    await b.reload();
    await b.click(`[data-testid=apps] a[data-app="${h5.id}"]`);
    await b.waitForURL(/\/healthz\?from=card&onecard_ticket=[\w-]{43}$/, { timeout: 10_000 });
    results.push("launch: /me listed the school's app; its own link opened its page for the North card with a one-time ticket");
    await phoneA.close();
    await phoneB.close();
  }

  // A school's own front end: at its own address (here localhost, against the platform's
  // 127.0.0.1) /claim alone is its claim page, in its colour with its logo; at the
  // platform's address the same page looks the platform's.
  {
    const lakeside = await api(root, "POST", "/tenants",
      { name: "Lakeside School", kind: "k12", edition: "professional" });
    const own = `https://localhost:${new URL(base).port}`;
    await api(lakeside.admin_token, "PUT", "/tenant/front-end",
      { title: "Lakeside Card", accent_color: "#8A1538" });
    // The operator serves the school's pages at its own address once its name points here.
    const fe = await api(root, "PUT", `/tenants/${lakeside.id}/front-end/address`, { public_url: own });
    assert.equal(fe.public_url, own);
    const logo = await paint(context, 128, 128, ["#8a1538", "#8a1538"], "L", 80, 38, 95);
    await upload(lakeside.admin_token, "/tenant/front-end/logo", logo);
    const types = await api(lakeside.admin_token, "POST", "/identity-types",
      { name: "student", category: "student", verification: "registration" });
    let lakeCard = await api(lakeside.admin_token, "POST", "/cards", {
      title: "Lakeside card", subtitle: "student_card",
      identity_type_ids: [types.id], claim_mode: "open_link",
    });
    const lakeCover = await paint(context, 1000, 600, ["#8a1538", "#3b0a18"], "Lakeside School", 72, 60, 300);
    lakeCard = await upload(lakeside.admin_token, `/cards/${lakeCard.id}/cover`, lakeCover);
    await api(root, "POST", `/card-reviews/${lakeCard.id}/approve`, { revision: lakeCard.revision });
    const link = await api(lakeside.admin_token, "GET", "/claim-link");
    assert.ok(link.url.startsWith(`${own}/claim?tenant=${lakeside.id}`), link.url);

    const phones = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const phone = await phones.newPage();
    await phone.goto(`http://localhost:${new URL(base).port}/claim`);
    await phone.waitForFunction(() => document.getElementById("title").textContent === "Lakeside School",
      null, { timeout: 10_000 });
    await phone.waitForSelector("[data-testid=brand-logo]:visible", { timeout: 10_000 });
    await phone.waitForSelector("[data-testid=claim]:visible", { timeout: 10_000 });
    await phone.waitForFunction(() => document.querySelector(".card-tile img").naturalWidth === 1000,
      null, { timeout: 10_000 });
    assert.ok(await phone.locator("[data-testid=brand-logo]").evaluate((img) => img.naturalWidth === 128),
      "the logo loaded from the school's address");
    assert.equal(await phone.title(), "Lakeside Card · claim your card");
    assert.equal(await phone.evaluate(() =>
      getComputedStyle(document.documentElement).getPropertyValue("--accent").trim()), "#8a1538");
    await phone.screenshot({ path: `${shots}/claim-own-address.png` });
    const plain = await phones.newPage();
    await plain.goto(`${base}/claim?tenant=${lakeside.id}`);
    await plain.waitForFunction(() => document.getElementById("title").textContent === "Lakeside School",
      null, { timeout: 10_000 });
    // Its cover's link carries the school's address; the page loads it from its own.
    await plain.waitForFunction(() => document.querySelector(".card-tile img").naturalWidth === 1000,
      null, { timeout: 10_000 });
    assert.equal(await plain.locator("[data-testid=brand-logo]").count(), 0);
    assert.equal(await plain.title(), "OneCard · claim your card");
    results.push("front end: /claim at the school's own address found the school by its host and wore its colour and logo; at the platform's it did not");
    await phones.close();
  }
} finally {
  await browser.close();
}
for (const r of results) console.log(r);
console.log("browser tests: ok");
