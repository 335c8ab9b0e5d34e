// The me page (see me.html).
"use strict";
(async () => {
  const session = await OneCard.signedIn("me", "Card token", "/me");
  if (!session) return;
  const { tok, data: me } = session;
  const $ = (id) => document.getElementById(id);
  $("who").textContent = me.name;
  $("main").classList.remove("hidden");

  // Which code the page shows: the payment code for tills, or the personal code for a
  // shuttle's phone (it names the holder and cannot pay).
  let mode = "pay";

  // "Your code was just scanned" is for a payment just made: its first state. A later
  // change of a payment (a repayment settling it, say) is no scan.
  async function refreshCode() {
    try {
      const ride = mode === "ride";
      const c = await OneCard.api(tok, "POST", ride ? "/me/personal-codes" : "/me/payment-codes/qr", {});
      $("qr").innerHTML = c.svg;
      $("qr").dataset.code = c.code;
      $("qr").dataset.mode = mode;
      $("qrnote").textContent = ride
        ? "Show this code to the shuttle's phone. It refreshes every minute."
        : "Show this code at the till. It refreshes every minute.";
      $("agreement").classList.add("hidden");
    } catch (e) {
      $("qr").innerHTML = `<span class="muted">${OneCard.esc(e.message)}</span>`;
      delete $("qr").dataset.code;
      // A card just claimed has not signed the agreement yet: offer it here.
      const unsigned = e.problem && e.problem.code === "agreement_required";
      $("agreement").classList.toggle("hidden", !unsigned);
    }
  }

  $("sign").addEventListener("click", async () => {
    $("sign").disabled = true;
    try {
      await OneCard.api(tok, "POST", "/me/agreement", {});
      await refreshCode();
    } catch (e) {
      alert(e.message);
    } finally {
      $("sign").disabled = false;
    }
  });

  async function refreshWallet() {
    const w = await OneCard.api(tok, "GET", "/me/wallet");
    $("balance").textContent = OneCard.yuan(w.balance);
    $("subsidies").innerHTML = w.subsidies.map((s) =>
      `<li><span>${OneCard.esc(s.name)}</span><span>${OneCard.yuan(s.balance)}</span></li>`).join("")
      || `<li class="muted">none</li>`;
    const coupons = w.coupons.filter((c) => !c.used);
    $("coupons").innerHTML = coupons.map((c) =>
      `<li><span>${OneCard.esc(c.name)}</span><span>−${OneCard.yuan(c.discount)}</span></li>`).join("")
      || `<li class="muted">none</li>`;
    $("arrears").classList.toggle("hidden", !(w.arrears > 0));
    $("owed").textContent = OneCard.yuan(w.arrears);
    $("frozen").classList.toggle("hidden", !w.frozen);
    $("frozen").textContent = w.frozen
      ? (w.frozen_until ? `Frozen until ${new Date(w.frozen_until).toLocaleString()}` : "Frozen: ask the card office")
      : "";
  }

  // Topping up online (when the tenant allows it): an order at the payment provider, paid
  // in its app (the sandbox's: a button here), credited once the provider says it was
  // paid. The page asks until then, as the server does on its own.
  let topups = null;
  async function refreshTopUp() {
    topups = await OneCard.api(tok, "GET", "/me/wallet/online-topups");
    $("topup").classList.toggle("hidden", !topups.enabled);
    $("topup-amount").placeholder = `${OneCard.yuan(topups.min)} to ${OneCard.yuan(topups.max)}`;
  }
  async function settled(id) {
    for (let i = 0; i < 60; i++) {
      const c = await OneCard.api(tok, "GET", `/me/wallet/charges/${id}`);
      if (c.status !== "pending") return c;
      await new Promise((r) => setTimeout(r, 1500));
    }
    return null;
  }
  $("topup-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const state = $("topup-state");
    const text = $("topup-amount").value.trim();
    const fen = Math.round(Number(text) * 100);
    if (!/^\d+(\.\d{1,2})?$/.test(text) || fen < topups.min || fen > topups.max) {
      state.textContent = `Enter ${OneCard.yuan(topups.min)} to ${OneCard.yuan(topups.max)}.`;
      return;
    }
    $("topup-go").disabled = true;
    try {
      const c = await OneCard.api(tok, "POST", "/me/wallet/charges", { amount: fen },
        { "Idempotency-Key": OneCard.uuid() });
      $("topup").dataset.status = "pending";
      if (c.pay && c.pay.sandbox_pay_url) {
        state.innerHTML = `${OneCard.yuan(fen)} to pay. <button type="button" id="sandbox-pay">Pay in the sandbox</button>`;
        await new Promise((done) => $("sandbox-pay").addEventListener("click", done, { once: true }));
        state.textContent = "Paying…";
        await OneCard.api(tok, "POST", c.pay.sandbox_pay_url.replace(/^\/api\/v1/, ""), {});
      } else {
        state.textContent = `Pay ${OneCard.yuan(fen)} in your payment app.`;
      }
      const done = await settled(c.id);
      $("topup").dataset.status = done ? done.status : "pending";
      state.textContent = !done ? "Waiting for the payment: it is credited as soon as it is paid."
        : done.status === "paid" ? `${OneCard.yuan(done.amount)} credited.`
        : "Not paid in time: closed, nothing was taken.";
      $("topup-amount").value = "";
      await Promise.all([refreshWallet(), refreshStatement()]);
    } catch (e) {
      state.textContent = e.message;
    } finally {
      $("topup-go").disabled = false;
    }
  });

  // The statement: every movement of my money, newest first, a page at a time.
  const SOURCES = { balance: "balance", subsidy: "subsidy", deferred: "bank", coupon: "coupon" };
  function statementLine(l) {
    const when = new Date(l.at).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    const where = l.merchant ? OneCard.esc(l.merchant.name) : "";
    let what, sum, note = "";
    switch (l.kind) {
      case "payment": {
        const p = l.payment;
        what = where || "Payment";
        if (p.status === "declined") {
          sum = `<span class="muted">${OneCard.yuan(l.amount)}</span>`;
          note = `declined: ${OneCard.esc(OneCard.REASONS[p.decline_reason] || p.decline_reason)}`;
        } else {
          sum = `−${OneCard.yuan(l.amount)}`;
          const paid = Object.entries(SOURCES).filter(([k]) => p.breakdown[k] > 0)
            .map(([k, name]) => `${name} ${OneCard.yuan(p.breakdown[k])}`).join(", ");
          note = paid + (p.refunded > 0 ? ` · ${OneCard.yuan(p.refunded)} refunded` : "")
            + (p.status === "unsettled" ? " · unsettled" : "");
        }
        break;
      }
      case "refund":
        what = `Refund${where ? ` · ${where}` : ""}`;
        sum = `+${OneCard.yuan(l.amount)}`;
        note = "back to " + Object.entries(SOURCES).filter(([k]) => l.returned[k] > 0)
          .map(([k, name]) => `${name} ${OneCard.yuan(l.returned[k])}`).join(", ");
        break;
      case "top_up": what = "Top-up"; sum = `+${OneCard.yuan(l.amount)}`; break;
      case "withdrawal": what = "Paid out to me"; sum = `−${OneCard.yuan(l.amount)}`; break;
      case "top_up_reversal": what = "Top-up taken back (credited in error)"; sum = `−${OneCard.yuan(l.amount)}`; break;
      case "subsidy": what = `Subsidy · ${OneCard.esc(l.subsidy_account.name)}`; sum = `+${OneCard.yuan(l.amount)}`; break;
      case "arrears_opened": what = "Owed: the bank declined a payment"; sum = OneCard.yuan(l.amount); break;
      case "arrears_repaid": what = "Repaid what I owed"; sum = OneCard.yuan(l.amount); break;
      case "arrears_written_off": what = "Owed, written off"; sum = OneCard.yuan(l.amount); break;
      default: what = "Adjustment"; sum = (l.amount < 0 ? "−" : "+") + OneCard.yuan(Math.abs(l.amount));
    }
    // A top-up's, a payout's or a reversal's bank reference: what the bank statement shows.
    if (l.reference) note = `reference ${OneCard.esc(l.reference)}`;
    return `<li data-kind="${OneCard.esc(l.kind)}" data-line="${OneCard.esc(l.id)}">
      <span>${what}<br><span class="muted">${when}${note ? ` · ${note}` : ""}</span></span>
      <span class="money">${sum}</span></li>`;
  }
  let nextLines = null;
  async function refreshStatement(more = false) {
    const q = more && nextLines ? `?limit=20&cursor=${encodeURIComponent(nextLines)}` : "?limit=20";
    const page = await OneCard.api(tok, "GET", `/me/statement${q}`);
    const html = page.items.map(statementLine).join("");
    if (more) $("lines").insertAdjacentHTML("beforeend", html);
    else $("lines").innerHTML = html || `<li class="muted">nothing yet</li>`;
    nextLines = page.next_cursor;
    $("more").classList.toggle("hidden", !nextLines);
  }
  $("more").addEventListener("click", () => refreshStatement(true));

  $("repay").addEventListener("click", async () => {
    $("repay").disabled = true;
    try {
      await OneCard.api(tok, "POST", "/me/arrears/repay", {}, { "Idempotency-Key": OneCard.uuid() });
      await Promise.all([refreshWallet(), refreshStatement()]);
    } catch (e) {
      alert(e.message);
    } finally {
      $("repay").disabled = false;
    }
  });

  // Requests to visit me, to approve or reject.
  async function refreshVisitors() {
    const list = await OneCard.api(tok, "GET", "/me/visitor-requests?status=pending");
    $("visitors").classList.toggle("hidden", list.items.length === 0);
    const when = (t) => new Date(t).toLocaleString([], {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    });
    $("visitor-list").innerHTML = list.items.map((r) => `<li data-visitor="${OneCard.esc(r.id)}">
      <span>${OneCard.esc(r.name)}${r.company ? ` (${OneCard.esc(r.company)})` : ""}<br>
        <span class="muted">${when(r.starts_at)}${r.purpose ? ` · ${OneCard.esc(r.purpose)}` : ""}</span></span>
      <span><button data-do="approve">Approve</button> <button data-do="reject">Reject</button></span>
    </li>`).join("");
  }
  $("visitor-list").addEventListener("click", async (ev) => {
    const act = ev.target.dataset.do;
    const item = ev.target.closest("[data-visitor]");
    if (!act || !item) return;
    const body = act === "reject" ? { reason: prompt("A reason for the visitor (optional)") || null } : {};
    try {
      await OneCard.api(tok, "POST", `/me/visitor-requests/${item.dataset.visitor}/${act}`, body);
    } catch (e) {
      alert(e.message);
    }
    refreshVisitors();
  });

  // Global identity: my records in the group's other schools, each opened from here (its
  // card moves to this phone), and a link made by showing one card's code to the other.
  async function refreshSchools() {
    const { person, linkable } = await OneCard.api(tok, "GET", "/me/identity");
    $("schools").classList.toggle("hidden", !person && !linkable);
    $("link").classList.toggle("hidden", !linkable);
    const links = person ? person.links : [];
    $("school-list").innerHTML = links.map((l) => {
      const mine = l.user_id === me.user_id;
      return `<li data-tenant="${OneCard.esc(l.tenant_id)}">
        <span>${OneCard.esc(l.tenant_name)}<br><span class="muted">${OneCard.esc(l.name)} (${OneCard.esc(l.number)})</span></span>
        <span>${mine ? `<span class="muted">this card</span>`
          : `<button data-do="open">Open</button> <button data-do="unlink">Unlink</button>`}</span>
      </li>`;
    }).join("") || `<li class="muted">none linked yet</li>`;
  }
  $("school-list").addEventListener("click", async (ev) => {
    const act = ev.target.dataset.do;
    const item = ev.target.closest("[data-tenant]");
    if (!act || !item) return;
    try {
      if (act === "open") {
        const s = await OneCard.api(tok, "POST", "/me/identity/sessions", { tenant_id: item.dataset.tenant });
        localStorage.setItem("onecard.me.token", s.token);
        location.reload();
        return;
      }
      await OneCard.api(tok, "DELETE", `/me/identity/links/${item.dataset.tenant}`);
    } catch (e) {
      alert(e.message);
    }
    refreshSchools();
  });
  $("make-code").addEventListener("click", async () => {
    try {
      const c = await OneCard.api(tok, "POST", "/me/identity/link-codes", {});
      $("link-code").textContent = c.code;
      $("link-problem").textContent = "";
    } catch (e) {
      $("link-problem").textContent = e.message;
    }
  });
  $("redeem").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const code = $("code-in").value.trim();
    if (!code) return;
    try {
      await OneCard.api(tok, "POST", "/me/identity/links", { code });
      $("code-in").value = "";
      $("link-problem").textContent = "";
      refreshSchools();
    } catch (e) {
      $("link-problem").textContent = e.message;
    }
  });

  // The organisation's apps this card opens (each through its own link, /launch/<app>).
  async function refreshApps() {
    const list = await OneCard.api(tok, "GET", "/me/apps");
    $("apps").classList.toggle("hidden", list.items.length === 0);
    $("app-list").innerHTML = list.items.map((a) => `<li>
      <span>${OneCard.esc(a.name)}${a.description ? `<br><span class="muted">${OneCard.esc(a.description)}</span>` : ""}</span>
      <a href="/launch/${encodeURIComponent(a.id)}" data-app="${OneCard.esc(a.id)}">Open</a>
    </li>`).join("");
  }

  for (const m of ["pay", "ride"]) {
    $(`mode-${m}`).addEventListener("click", () => {
      mode = m;
      $("mode-pay").classList.toggle("on", m === "pay");
      $("mode-ride").classList.toggle("on", m === "ride");
      refreshCode();
    });
  }

  // The code's refresh is scheduled with the first code, not after every other part of the
  // page has loaded: a slow part must not hold up the refresh (the browser test found a
  // code that never changed when the interval started after its clock had moved on).
  setInterval(refreshCode, 60_000);
  await Promise.all([refreshCode(), refreshWallet(), refreshStatement(), refreshVisitors(), refreshSchools(),
    refreshApps(), refreshTopUp()]);

  new OneCard.Live(tok, [me.topic], {
    onEvent: async (e) => {
      const p = e.data;
      const n = $("notice");
      const scan = ["payment.succeeded", "payment.accepted", "payment.declined"].includes(e.type)
        && p.created_at === p.updated_at;
      $("main").dataset.lastEvent = e.type;
      if (scan) {
        n.textContent = p.status === "declined"
          ? `Your code was just scanned: ${OneCard.yuan(p.amount)} declined (${OneCard.REASONS[p.decline_reason] || p.decline_reason}).`
          : `Your code was just scanned: ${OneCard.yuan(p.amount)} ${p.status}.`;
        n.classList.remove("hidden");
        refreshCode();
      } else if (e.type === "checkin.confirmed") {
        n.textContent = `Checked in at ${new Date(p.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}.`;
        n.classList.remove("hidden");
        return;
      } else if (e.type === "visitor.requested") {
        n.textContent = `${p.name} asks to visit you.`;
        n.classList.remove("hidden");
        refreshVisitors();
        return;
      } else if (e.type === "visitor.entered") {
        n.textContent = `Your visitor ${p.name} has come in.`;
        n.classList.remove("hidden");
        return;
      } else if (e.type === "shuttle.ride") {
        const at = new Date(p.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        n.textContent = `Boarded ${p.bus_name} (${p.route_name}) at ${at}.`;
        n.classList.remove("hidden");
        if (mode === "ride") refreshCode();
        return;
      } else if (e.type === "arrears.written_off") {
        n.textContent = `${OneCard.yuan(p.amount)} you owed was written off at the month's end.`;
        n.classList.remove("hidden");
      }
      refreshWallet();
      refreshStatement();
    },
    onStatus: OneCard.status,
    onExpired: () => Promise.all([refreshWallet(), refreshStatement()]),
  });
})();
