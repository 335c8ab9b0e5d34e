// The screen page (see screen.html).
"use strict";
(async () => {
  const session = await OneCard.signedIn("screen", "Terminal token", "/terminal");
  if (!session) return;
  const { tok, data: me } = session;
  const code = me.collection
    ? ` · code ${me.collection.code.slice(0, 4)}-${me.collection.code.slice(4)}` : "";
  document.getElementById("who").textContent = `${me.merchant_name} · ${me.name}${code}`;
  document.getElementById("main").classList.remove("hidden");
  const $ = (id) => document.getElementById(id);

  async function show(p) {
    const ok = p.status === "succeeded" || p.status === "accepted";
    const box = $("receipt");
    box.className = `receipt ${p.status === "declined" || p.status === "unsettled" ? "bad" : ok ? "ok" : ""}`;
    box.dataset.payment = p.id;
    box.dataset.status = p.status;
    $("state").textContent = {
      succeeded: "Paid", accepted: "Paid (pending)", declined: "Declined",
      unsettled: "Unsettled", refunded: "Refunded", partially_refunded: "Partly refunded",
      written_off: "Written off",
    }[p.status] || p.status;
    $("amount").textContent = OneCard.yuan(p.amount);
    $("reason").textContent = p.decline_reason ? (OneCard.REASONS[p.decline_reason] || p.decline_reason) : "";
    const b = p.breakdown || {};
    const parts = [["Coupon", b.coupon], ["Subsidy", b.subsidy], ["Balance", b.balance], ["Deferred", b.deferred]]
      .filter(([, v]) => v > 0)
      .map(([k, v]) => `<span><b>${k}</b>${OneCard.yuan(v)}</span>`);
    $("breakdown").innerHTML = parts.join("");
    $("holder").textContent = "";
    if (p.user_id) {
      try {
        const h = await OneCard.api(tok, "GET", `/payments/${p.id}/holder`);
        if (box.dataset.payment === p.id) $("holder").textContent = h.name;
      } catch (_) { /* the name is a courtesy */ }
    }
  }

  // A count-only collection code's visit: who was counted, and when.
  function counted(v) {
    const box = $("receipt");
    box.className = "receipt ok";
    box.dataset.visit = v.id;
    delete box.dataset.payment;
    box.dataset.status = "counted";
    $("state").textContent = "Counted";
    $("amount").textContent = new Date(v.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    $("holder").textContent = [v.name, v.number].filter(Boolean).join(" · ");
    $("reason").textContent = "";
    $("breakdown").innerHTML = "";
  }

  new OneCard.Live(tok, [me.topic], {
    onEvent: (e) => {
      if (e.type.startsWith("payment.")) show(e.data);
      else if (e.type === "collection.visit") counted(e.data);
    },
    onStatus: OneCard.status,
  });
})();
