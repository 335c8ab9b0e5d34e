// The dashboard page (see dashboard.html).
"use strict";
(async () => {
  const session = await OneCard.signedIn("dashboard", "Admin token", "/merchants");
  if (!session) return;
  const { tok } = session;
  const $ = (id) => document.getElementById(id);
  const merchants = session.data.items || session.data;
  $("main").classList.remove("hidden");

  // Whose dashboard this is. A tenant group's admin sees its members, each a link to that
  // member's own dashboard (`?member=`, which live.js turns into acting in it).
  const acting = new URLSearchParams(location.search).get("member");
  OneCard.api(tok, "GET", "/tenant").then((t) => {
    $("who").textContent = acting ? `${t.name} · as its group's admin` : t.name;
  }).catch(() => {});
  if (!acting) {
    OneCard.api(tok, "GET", "/group/tenants?limit=500").then((page) => {
      $("members").innerHTML = page.items.filter((t) => !t.head).map((t) =>
        `<li><a href="/dashboard?member=${encodeURIComponent(t.id)}" data-member="${OneCard.esc(t.id)}">${OneCard.esc(t.name)}</a>` +
        `<span class="muted">${OneCard.esc(t.edition)}</span></li>`).join("") ||
        `<li class="muted">no member tenants yet</li>`;
      $("group-panel").classList.remove("hidden");
    }).catch(() => {}); // not a group's admin: the panel stays hidden
  }
  const byId = new Map(merchants.map((m) => [m.id, m]));
  const totals = new Map(); // merchant id -> {gross, count} (roll-up)

  function order() {
    const out = [];
    const walk = (parent, depth) => {
      for (const m of merchants.filter((m) => (m.parent_id || null) === parent)) {
        out.push([m, depth]);
        walk(m.id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  function renderTree() {
    $("tree").innerHTML = order().map(([m, depth]) => {
      const t = totals.get(m.id) || { gross: 0, count: 0 };
      return `<li style="--depth:${depth}"><span>${OneCard.esc(m.name)}</span><span>${OneCard.yuan(t.gross)} · ${t.count}</span></li>`;
    }).join("") || `<li class="muted">no merchants yet</li>`;
    let gross = 0, count = 0;
    for (const m of merchants.filter((m) => !m.parent_id)) {
      const t = totals.get(m.id) || { gross: 0, count: 0 };
      gross += t.gross; count += t.count;
    }
    $("gross").textContent = OneCard.yuan(gross);
    $("count").textContent = count;
  }

  async function refetch() {
    await Promise.all(merchants.map(async (m) => {
      const t = await OneCard.api(tok, "GET", `/merchants/${m.id}/totals`);
      totals.set(m.id, { gross: t.rollup.gross - t.rollup.refunds, count: t.rollup.count });
    }));
    const w = await OneCard.api(tok, "GET", "/stats/wallets");
    $("frozen").textContent = w.frozen;
    $("arrears").textContent = w.in_arrears;
    renderTree();
  }

  // Payments per second over the last 120 s, drawn as bars.
  const buckets = new Array(120).fill(0);
  let bucketAt = Math.floor(Date.now() / 1000);
  function tick(now = Math.floor(Date.now() / 1000)) {
    while (bucketAt < now) { buckets.shift(); buckets.push(0); bucketAt++; }
  }
  function draw() {
    tick();
    $("pps").textContent = buckets[buckets.length - 2];
    const c = $("chart"), g = c.getContext("2d");
    const max = Math.max(5, ...buckets);
    g.clearRect(0, 0, c.width, c.height);
    g.strokeStyle = "#263241";
    g.beginPath(); g.moveTo(0, c.height - 0.5); g.lineTo(c.width, c.height - 0.5); g.stroke();
    const w = c.width / buckets.length;
    g.fillStyle = "#4ea1ff";
    buckets.forEach((n, i) => {
      const h = (n / max) * (c.height - 16);
      g.fillRect(i * w, c.height - h, Math.max(1, w - 1), h);
    });
    g.fillStyle = "#8fa1b3"; g.font = "12px system-ui";
    g.fillText(`${max}/s`, 4, 12);
  }
  setInterval(draw, 250);

  // Events update the figures at once; the page redraws at most 4 times a second, so a
  // busy lunchtime (thousands of payments a second) never floods the browser.
  const FEED_MAX = 25;
  let recent = []; // newest first, not yet drawn
  let dirty = false;
  let refetchWanted = false;
  let refetching = false;

  function feedItem(p) {
    const li = document.createElement("li");
    const m = byId.get(p.merchant_id);
    const ok = p.status !== "declined" && p.status !== "unsettled";
    li.innerHTML = `<span>${new Date(p.created_at).toLocaleTimeString()} · ${OneCard.esc(m ? m.name : "?")}</span>` +
      `<span class="${ok ? "ok" : "bad"}">${OneCard.yuan(p.amount)} ${p.status}${p.decline_reason ? " · " + p.decline_reason : ""}</span>`;
    return li;
  }

  function flush() {
    if (recent.length) {
      const list = $("feed");
      for (const p of recent.slice(0, FEED_MAX).reverse()) list.prepend(feedItem(p));
      while (list.children.length > FEED_MAX) list.lastChild.remove();
      recent = [];
    }
    if (dirty) {
      renderTree();
      dirty = false;
    }
    if (refetchWanted && !refetching) {
      refetchWanted = false;
      refetching = true;
      refetch().finally(() => { refetching = false; });
    }
  }
  setInterval(flush, 250);

  // Notices: the latest few with each one's delivery status, live on its topic (for
  // admins who may read notices; the panel stays hidden for the others).
  const NOTICES_MAX = 5;
  let notices = new Map(); // id -> notice, newest first
  let noticesDirty = false;
  let live = null;
  function renderNotices() {
    $("notices").innerHTML = [...notices.values()].map((n) => {
      const c = n.counts;
      const parts = ["delivered", "sent", "queued", "failed", "recalled"]
        .filter((s) => c[s] > 0)
        .map((s) => `<span class="${s}">${c[s]} ${s}</span>`)
        .join(" · ");
      const fell = c.fell_back ? ` · ${c.fell_back} fell back` : "";
      return `<li data-notice="${n.id}" data-status="${n.status}">` +
        `<span>${OneCard.esc(n.title)} <span class="muted">${n.status}</span></span>` +
        `<span>${parts || "nobody yet"}${fell}</span></li>`;
    }).join("") || `<li class="muted">no notices yet</li>`;
  }
  async function refetchNotices() {
    let page;
    try {
      page = await OneCard.api(tok, "GET", `/notices?limit=${NOTICES_MAX}`);
    } catch (e) {
      if (e.status === 403) return; // not granted: no panel
      throw e;
    }
    $("notices-panel").classList.remove("hidden");
    const next = new Map(page.items.map((n) => [n.id, n]));
    if (live) {
      for (const id of notices.keys()) if (!next.has(id)) live.unfollow(`notice:${id}`);
      for (const id of next.keys()) live.follow(`notice:${id}`);
    }
    notices = next;
    renderNotices();
  }
  setInterval(() => { if (noticesDirty) { renderNotices(); noticesDirty = false; } }, 250);

  const counted = new Set(); // an accepted payment that later succeeds counts once
  await refetch();
  setInterval(refetch, 30_000);
  await refetchNotices();
  setInterval(() => refetchNotices().catch(() => {}), 5_000);
  live = new OneCard.Live(tok, ["tenant", ...[...notices.keys()].map((id) => `notice:${id}`)], {
    onEvent: (e) => {
      if (e.type === "notice.delivery") {
        const n = notices.get(e.data.notice_id);
        if (n && e.data.round >= n.round) {
          n.round = e.data.round;
          n.counts = e.data.counts;
          n.status = e.data.notice_status;
          noticesDirty = true;
        }
        return;
      }
      if (!e.type.startsWith("payment.")) {
        if (e.type.startsWith("wallet.")) refetchWanted = true;
        return;
      }
      const p = e.data;
      recent.unshift(p);
      if (recent.length > FEED_MAX) recent.length = FEED_MAX;
      if ((e.type === "payment.succeeded" || e.type === "payment.accepted") && !counted.has(p.id)) {
        counted.add(p.id);
        if (counted.size > 10000) counted.clear();
        tick(); buckets[buckets.length - 1]++;
        for (let id = p.merchant_id; id; id = (byId.get(id) || {}).parent_id) {
          const t = totals.get(id) || { gross: 0, count: 0 };
          totals.set(id, { gross: t.gross + p.amount, count: t.count + 1 });
        }
        dirty = true;
      } else if (e.type === "payment.unsettled" || e.type === "payment.refunded"
        || e.type === "payment.written_off") {
        refetchWanted = true;
      }
    },
    onStatus: OneCard.status,
    onExpired: () => Promise.all([refetch(), refetchNotices()]),
  });
})();
