// The pay page (see pay.html): a canteen's collection code, scanned with the phone's
// camera, opens /pay?code=…; the cardholder (signed in as on /me) sees whom they pay,
// enters the amount and pays from their wallet, or is counted at a count-only code, and
// sees the result to show at the counter.
"use strict";
(async () => {
  const session = await OneCard.signedIn("me", "Card token", "/me");
  if (!session) return;
  const { tok, data: me } = session;
  const $ = (id) => document.getElementById(id);
  $("who").textContent = me.name;
  $("main").classList.remove("hidden");

  const code = new URLSearchParams(location.search).get("code");
  if (!code) {
    $("ask").classList.remove("hidden");
    $("ask").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const typed = $("typed").value.trim();
      if (typed) location.search = `?code=${encodeURIComponent(typed)}`;
    });
    return;
  }

  let shown;
  try {
    shown = await OneCard.api(tok, "GET", `/collection-codes/${encodeURIComponent(code)}`);
  } catch (e) {
    $("ask").classList.remove("hidden");
    $("typed").value = code;
    $("ask").querySelector("label").textContent =
      e.status === 404 ? "No such code here: check the code on the sign" : e.message;
    $("ask").addEventListener("submit", (ev) => {
      ev.preventDefault();
      location.search = `?code=${encodeURIComponent($("typed").value.trim())}`;
    });
    return;
  }

  const order = $("order");
  order.classList.remove("hidden");
  $("payee").textContent = shown.merchant_name;
  $("place").textContent = shown.name;
  const counting = shown.mode === "count";
  if (counting) {
    order.querySelector(".muted").textContent = "Checking in at";
    $("amount").classList.add("hidden");
    $("amount-label").classList.add("hidden");
    $("go").textContent = "Count me in";
  } else {
    $("amount").focus();
  }

  // "12.5" or "12,50" yuan as fen; null unless a positive amount with at most 2 decimals.
  function fen(text) {
    const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
    if (!m) return null;
    const v = Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
    return v > 0 ? v : null;
  }

  function when(at) {
    return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function receipt(ok, state) {
    order.classList.add("hidden");
    const box = $("done");
    box.classList.remove("hidden");
    box.className = `receipt ${ok ? "ok" : "bad"}`;
    box.dataset.state = state;
  }

  function paid(p) {
    const ok = p.status === "succeeded" || p.status === "accepted";
    receipt(ok, p.status);
    $("state").textContent = ok ? (p.status === "accepted" ? "Paid (pending)" : "Paid") : "Declined";
    $("paid").textContent = OneCard.yuan(p.amount);
    $("where").textContent = `${shown.merchant_name} · ${shown.name}`;
    $("reason").textContent = p.decline_reason
      ? (OneCard.REASONS[p.decline_reason] || p.decline_reason) : "";
    const b = p.breakdown || {};
    $("breakdown").innerHTML = [["Coupon", b.coupon], ["Subsidy", b.subsidy],
      ["Balance", b.balance], ["Deferred", b.deferred]]
      .filter(([, v]) => v > 0)
      .map(([k, v]) => `<span><b>${k}</b>${OneCard.yuan(v)}</span>`).join("");
    $("when").textContent = when(p.created_at);
  }

  function counted(v, again) {
    receipt(true, again ? "repeat" : "counted");
    $("state").textContent = again ? "Already counted" : "Counted";
    $("paid").textContent = when(v.at);
    $("where").textContent = `${shown.merchant_name} · ${shown.name}`;
    $("when").textContent = me.name;
  }

  // One key per payment: a retry after a lost answer replays it rather than paying twice.
  let key = null;
  let keyFor = null;
  order.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("problem").textContent = "";
    const go = $("go");
    go.disabled = true;
    try {
      if (counting) {
        const path = `/collection-codes/${encodeURIComponent(shown.code)}/visits`;
        const res = await fetch(`/api/v1${path}`, {
          method: "POST", headers: { Authorization: `Bearer ${tok}` },
        });
        const body = await res.json();
        if (!res.ok) throw Object.assign(new Error(body.detail || res.statusText), { problem: body });
        counted(body, res.status === 200);
        return;
      }
      const amount = fen($("amount").value);
      if (amount === null) {
        $("problem").textContent = "Enter an amount, like 12.50";
        return;
      }
      if (keyFor !== amount) {
        key = OneCard.uuid();
        keyFor = amount;
      }
      const p = await OneCard.api(tok, "POST",
        `/collection-codes/${encodeURIComponent(shown.code)}/payments`,
        { amount }, { "Idempotency-Key": key });
      paid(p);
    } catch (e) {
      $("problem").textContent = e.message;
    } finally {
      go.disabled = false;
    }
  });
})();
